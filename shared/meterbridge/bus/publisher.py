"""Best-effort publishing to NATS JetStream from the Lambdas, behind a circuit breaker.

Publishing never fails the caller: it returns which messages JetStream acknowledged, and the
caller marks the others so the flush republishes them. ``Nats-Msg-Id`` is the CloudEvent id,
so a republish inside the stream's duplicate window is dropped by JetStream itself.

The connection is kept per event loop: Mangum and the sync helpers may run successive
invocations on different loops, and a nats-py connection belongs to the loop that made it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from meterbridge.bus.subjects import DUPLICATE_WINDOW_S, MAX_AGE_S, STREAM_SUBJECTS
from meterbridge.observability import logger
from meterbridge.resilience import CircuitBreaker
from meterbridge.settings import Settings, get_settings


@dataclass(frozen=True)
class Message:
    subject: str
    msg_id: str
    payload: dict[str, Any]


class NatsPublisher:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.breaker = CircuitBreaker("nats", failure_threshold=3, reset_timeout_s=15.0)
        self._nc: Any = None
        self._js: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stream_ready = False
        self._sync_loop: asyncio.AbstractEventLoop | None = None

    @property
    def enabled(self) -> bool:
        return self.settings.nats_enabled

    async def _connect(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._nc is not None and self._loop is loop and self._nc.is_connected:
            return self._js
        await self._close_quietly()
        import nats

        self._nc = await nats.connect(
            servers=self.settings.nats_servers,
            connect_timeout=self.settings.nats_connect_timeout_s,
            allow_reconnect=False,
            # 0 means "retry forever" in nats-py; 1 gives one attempt per server, then an error.
            max_reconnect_attempts=1,
            reconnect_time_wait=0.1,
            name="meterbridge-lambda",
        )
        self._loop = loop
        self._js = self._nc.jetstream(timeout=self.settings.nats_connect_timeout_s)
        if not self._stream_ready:
            await ensure_stream(
                self._js, self.settings.nats_stream, self.settings.nats_stream_replicas
            )
            self._stream_ready = True
        return self._js

    async def _close_quietly(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None:
            try:
                await nc.close()
            except Exception:  # noqa: BLE001 - a dead connection may fail to close; drop it
                pass

    async def publish(self, messages: Sequence[Message]) -> set[str]:
        """Publish ``messages``; return the ids JetStream acknowledged (maybe none)."""
        if not messages or not self.enabled:
            return set()
        if not self.breaker.allow():
            return set()
        acked: set[str] = set()
        try:
            js = await asyncio.wait_for(
                self._connect(), timeout=self.settings.nats_connect_timeout_s * 2
            )
            futures = [
                js.publish(
                    m.subject,
                    json.dumps(m.payload, separators=(",", ":")).encode(),
                    headers={"Nats-Msg-Id": m.msg_id},
                )
                for m in messages
            ]
            results = await asyncio.gather(*futures, return_exceptions=True)
            for message, result in zip(messages, results, strict=True):
                if not isinstance(result, BaseException):
                    acked.add(message.msg_id)
            if len(acked) == len(messages):
                self.breaker.record_success()
            else:
                self.breaker.record_failure()
        except Exception as exc:  # noqa: BLE001 - publishing is best effort by contract
            logger.warning("nats publish failed", extra={"error": type(exc).__name__})
            self.breaker.record_failure()
            await self._close_quietly()
        return acked

    def publish_sync(self, messages: Sequence[Message]) -> set[str]:
        """``publish`` for synchronous handlers (flush, webhook): a private, reused loop."""
        if not messages or not self.enabled:
            return set()
        if self._sync_loop is None or self._sync_loop.is_closed():
            self._sync_loop = asyncio.new_event_loop()
        return self._sync_loop.run_until_complete(self.publish(messages))


async def ensure_stream(js: Any, name: str, replicas: int = 1) -> None:
    """Create the stream if missing (idempotent; a stream created elsewhere is left as is)."""
    from nats.js.api import StreamConfig
    from nats.js.errors import NotFoundError

    try:
        await js.stream_info(name)
    except NotFoundError:
        await js.add_stream(
            StreamConfig(
                name=name,
                subjects=STREAM_SUBJECTS,
                duplicate_window=float(DUPLICATE_WINDOW_S),
                max_age=float(MAX_AGE_S),
                num_replicas=replicas,
            )
        )


_publisher: NatsPublisher | None = None


def get_publisher() -> NatsPublisher:
    global _publisher
    if _publisher is None:
        _publisher = NatsPublisher()
    return _publisher


def reset_publisher() -> None:
    global _publisher
    _publisher = None
