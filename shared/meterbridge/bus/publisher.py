"""Best-effort publishing to NATS JetStream from the Lambdas, behind a circuit breaker.

Publishing never fails the caller: it returns which messages JetStream acknowledged, and the
caller leaves the others in the outbox's republish index for the flush. ``Nats-Msg-Id`` is
``<source>#<id>`` (unique across tenants), so a republish inside the stream's duplicate window
is dropped by JetStream itself.

One connection per event loop: the ASGI server's loop and the private loop of
``publish_sync`` (flush, webhook) may both publish in one process, and a nats-py connection
belongs to the loop that made it (closing it from another loop leaves its tasks dangling).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from meterbridge.bus.connection import connect_options
from meterbridge.bus.subjects import DUPLICATE_WINDOW_S, MAX_AGE_S, STREAM_SUBJECTS
from meterbridge.observability import logger
from meterbridge.resilience import CircuitBreaker
from meterbridge.runtime.lazy import LazyLoader
from meterbridge.settings import Settings, get_settings

if TYPE_CHECKING:  # pragma: no cover
    import nats
    import nats.js.api as nats_api
    import nats.js.errors as nats_errors
else:
    nats = LazyLoader("nats", globals(), "nats")
    nats_api = LazyLoader("nats_api", globals(), "nats.js.api")
    nats_errors = LazyLoader("nats_errors", globals(), "nats.js.errors")


@dataclass(frozen=True)
class Message:
    subject: str
    msg_id: str
    payload: dict[str, Any]


class NatsPublisher:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.breaker = CircuitBreaker("nats", failure_threshold=3, reset_timeout_s=15.0)
        # loop -> (connection, JetStream context); only the owning loop touches its entry.
        self._conns: dict[asyncio.AbstractEventLoop, tuple[Any, Any]] = {}
        self._stream_ready = False
        self._sync_loop: asyncio.AbstractEventLoop | None = None

    @property
    def enabled(self) -> bool:
        return self.settings.nats_enabled

    async def _connect(self) -> Any:
        loop = asyncio.get_running_loop()
        for other in [lp for lp in self._conns if lp.is_closed()]:
            self._conns.pop(other, None)  # its loop is gone, and its connection with it
        current = self._conns.get(loop)
        if current is not None and current[0].is_connected:
            return current[1]
        await self._close_quietly()
        nc = await nats.connect(
            servers=self.settings.nats_servers,
            connect_timeout=self.settings.nats_connect_timeout_s,
            allow_reconnect=False,
            # 0 means "retry forever" in nats-py; 1 gives one attempt per server, then an error.
            max_reconnect_attempts=1,
            reconnect_time_wait=0.1,
            name="meterbridge-lambda",
            **connect_options(self.settings),
        )
        js = nc.jetstream(timeout=self.settings.nats_connect_timeout_s)
        self._conns[loop] = (nc, js)
        if not self._stream_ready:
            await ensure_stream(js, self.settings.nats_stream, self.settings.nats_stream_replicas)
            self._stream_ready = True
        return js

    async def _close_quietly(self) -> None:
        """Close this loop's connection, if any (never another loop's)."""
        nc, _ = self._conns.pop(asyncio.get_running_loop(), (None, None))
        if nc is not None:
            # A dead connection may fail to close; it is dropped either way.
            with contextlib.suppress(Exception):
                await nc.close()

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

    def close(self) -> None:
        """Close the private loop of ``publish_sync`` and its connection (tests, shutdown)."""
        loop, self._sync_loop = self._sync_loop, None
        if loop is None or loop.is_closed():
            return

        def run() -> None:
            loop.run_until_complete(self._close_quietly())
            loop.close()

        _outside_a_running_loop(run)

    def publish_sync(self, messages: Sequence[Message]) -> set[str]:
        """``publish`` for synchronous handlers (flush, webhook): a private, reused loop."""
        if not messages or not self.enabled:
            return set()
        if self._sync_loop is None or self._sync_loop.is_closed():
            self._sync_loop = asyncio.new_event_loop()
        loop = self._sync_loop
        acked: set[str] = set()
        _outside_a_running_loop(
            lambda: acked.update(loop.run_until_complete(self.publish(messages)))
        )
        return acked


def _outside_a_running_loop(run: Callable[[], None]) -> None:
    """Call ``run`` here, or on a thread of its own when a loop already runs in this thread.

    A synchronous caller inside a running loop (an async caller, a browser test's driver that
    runs the flush in-process) cannot run the private loop in the same thread; on Lambda no
    loop runs, and ``run`` is called directly.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # no loop runs in this thread
        run()
        return
    failure: list[Exception] = []

    def guarded() -> None:
        try:
            run()
        except Exception as exc:  # noqa: BLE001 - re-raised in the caller's thread below
            failure.append(exc)

    worker = threading.Thread(target=guarded, name="nats-publisher-loop")
    worker.start()
    worker.join()
    if failure:
        raise failure[0]


async def ensure_stream(js: Any, name: str, replicas: int = 1) -> None:
    """Create the stream if missing (idempotent; a stream created elsewhere is left as is)."""
    try:
        await js.stream_info(name)
    except nats_errors.NotFoundError:
        await js.add_stream(
            nats_api.StreamConfig(
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
    if _publisher is not None:
        _publisher.close()
    _publisher = None
