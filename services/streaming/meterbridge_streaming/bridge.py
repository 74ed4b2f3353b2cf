"""The NATS bridge: one connection and ONE JetStream consumer per process, for every client.

The consumer is an ordered, ephemeral push consumer on the whole stream (``meterbridge.
tenant.>``); events are fanned out in-process by tenant. Its consumers are plain callbacks
(``add_consumer``): the SSE fan-out, the metering consumer (per-kind counts), and anything
else in the process (the reference documents' multi-consumer design).

Failure handling:
- A circuit breaker (``meterbridge_nats_circuit_state``: 0 closed, 1 open, 2 half-open)
  opens on a lost connection or a failed connect; after its reset timeout one trial connect
  runs (half-open). The reset timeout doubles after each failed trial up to
  ``reconnect_max_s`` (the backoff) and returns to ``reconnect_base_s`` on success.
- While NATS is down, ``publish`` delivers through the in-memory fallback bus (positions
  ``(base, n)``, see fanout.py) and returns False so the caller keeps the event for a later
  republish; the republished copy (same ``Nats-Msg-Id``) is recognised and not delivered twice.
- When NATS returns, the new consumer starts at the last delivered sequence + 1: nothing is
  skipped and nothing repeated. The connection does not reconnect by itself
  (``allow_reconnect=False``) so every loss goes through the breaker; each connect tries the
  next server of ``NATS_SERVERS``, which is how the bridge moves to another cluster node.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from meterbridge.bus.connection import connect_options
from meterbridge.bus.subjects import (
    DUPLICATE_WINDOW_S,
    MAX_AGE_S,
    STREAM_SUBJECTS,
    tenant_filter,
    tenant_of,
)
from meterbridge.observability import logger
from meterbridge.resilience import BreakerState, CircuitBreaker
from meterbridge.settings import Settings, get_settings
from meterbridge_streaming.fanout import Position, StreamEvent, format_id
from meterbridge_streaming.metrics import (
    NATS_CIRCUIT_STATE,
    NATS_CONNECTED,
    NATS_FALLBACK_ACTIVE,
    NATS_MESSAGES_DELIVERED,
    NATS_MESSAGES_PUBLISHED,
    NATS_RECONNECTS,
    STREAM_EVENTS_BY_KIND,
)

Consumer = Callable[[StreamEvent], None]

# How many fallback events are remembered (by Nats-Msg-Id) to recognise their republished copy.
FALLBACK_MEMORY = 100_000


class NatsBridge:
    def __init__(
        self,
        settings: Settings | None = None,
        *,
        reconnect_base_s: float = 0.25,
        reconnect_max_s: float = 5.0,
        idle_heartbeat_s: float = 1.0,
    ) -> None:
        self.settings = settings or get_settings()
        self.reconnect_base_s = reconnect_base_s
        self.reconnect_max_s = reconnect_max_s
        self.idle_heartbeat_s = idle_heartbeat_s
        self.breaker = CircuitBreaker(
            "nats_stream",
            failure_threshold=1,
            reset_timeout_s=reconnect_base_s,
            on_change=self._on_breaker_change,
        )
        self._consumers: list[Consumer] = []
        self._on_first_position: list[Callable[[Position], None]] = []
        self._on_stream_reset: list[Callable[[Position], None]] = []
        # The last position handed to the consumers (JetStream seq, fallback counter).
        self.position: Position = (0, 0)
        self._started = False
        self._fallback: OrderedDict[str, Position] = OrderedDict()
        self._nc: Any = None
        self._js: Any = None
        self._sub: Any = None
        self._server_index = 0
        self._lost = asyncio.Event()
        self._connected = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        # Recent breaker transitions (state name, epoch seconds), for health and tests.
        self.transitions: deque[tuple[str, float]] = deque(maxlen=32)
        NATS_CIRCUIT_STATE.set(int(BreakerState.CLOSED))
        NATS_CONNECTED.set(0)

    # -- wiring ---------------------------------------------------------------------------
    def add_consumer(self, consumer: Consumer) -> None:
        """``consumer(event)`` runs on the event loop for every event; it must not block."""
        self._consumers.append(consumer)

    def on_first_position(self, callback: Callable[[Position], None]) -> None:
        self._on_first_position.append(callback)

    def on_stream_reset(self, callback: Callable[[Position], None]) -> None:
        self._on_stream_reset.append(callback)

    @property
    def enabled(self) -> bool:
        return self.settings.nats_enabled

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def connected_url(self) -> str | None:
        """The NATS server this process consumes from (for operators and tests)."""
        nc = self._nc
        if nc is None or nc.connected_url is None:
            return None
        return str(nc.connected_url.geturl())

    @property
    def fallback_active(self) -> bool:
        return not self.connected

    def _on_breaker_change(self, _: str, state: BreakerState) -> None:
        NATS_CIRCUIT_STATE.set(int(state))
        self.transitions.append((state.name.lower(), time.time()))
        logger.info("nats breaker state", extra={"state": state.name.lower()})

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        NATS_FALLBACK_ACTIVE.set(1)
        if not self.enabled:
            # In-memory only (local runs without NATS): ids are fallback ids from (0, 0).
            self._set_first_position((0, 0))
            return
        self._task = asyncio.create_task(self._supervise(), name="nats-bridge")

    async def wait_connected(self, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def drain(self, timeout: float = 5.0) -> None:
        """Stop consuming and drain the connection (pending publishes flushed)."""
        self._stop.set()
        self._lost.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._task, timeout)
            self._task = None
        nc, self._nc, self._js, self._sub = self._nc, None, None, None
        self._connected.clear()
        NATS_CONNECTED.set(0)
        if nc is not None and not nc.is_closed:
            try:
                await asyncio.wait_for(nc.drain(), timeout)
            except Exception:  # noqa: BLE001 - at shutdown a dead connection is simply dropped
                with contextlib.suppress(Exception):
                    await nc.close()

    async def _supervise(self) -> None:
        while not self._stop.is_set():
            wait = self.breaker.seconds_until_trial()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), wait)
                continue
            if not self.breaker.allow():
                await asyncio.sleep(0.05)
                continue
            try:
                # Bounded: a half-dead cluster node can leave a JetStream call unanswered.
                await asyncio.wait_for(
                    self._connect_once(), self.settings.nats_connect_timeout_s * 4 + 2
                )
            except Exception as exc:  # noqa: BLE001 - any connect failure opens the breaker
                logger.warning(
                    "nats connect failed",
                    extra={"error": type(exc).__name__, "retry_in_s": self.breaker.reset_timeout_s},
                )
                await self._close_quietly()
                self.breaker.record_failure()
                self.breaker.reset_timeout_s = min(
                    self.reconnect_max_s, self.breaker.reset_timeout_s * 2
                )
                continue
            self.breaker.record_success()
            self.breaker.reset_timeout_s = self.reconnect_base_s
            self._connected.set()
            NATS_CONNECTED.set(1)
            NATS_FALLBACK_ACTIVE.set(0)
            NATS_RECONNECTS.inc()
            logger.info("nats bridge consuming", extra={"after": format_id(self.position)})
            await self._lost.wait()
            self._lost.clear()
            self._connected.clear()
            NATS_CONNECTED.set(0)
            NATS_FALLBACK_ACTIVE.set(1)
            await self._close_quietly()
            if not self._stop.is_set():
                logger.warning("nats connection lost; in-memory fallback active")
                self.breaker.record_failure()

    async def _connect_once(self) -> None:
        import nats
        from nats.js.api import ConsumerConfig, DeliverPolicy

        servers = self.settings.nats_servers
        server = servers[self._server_index % len(servers)]
        self._server_index += 1
        self._lost.clear()

        async def _disconnected() -> None:
            self._lost.set()

        self._nc = await nats.connect(
            servers=[server],
            connect_timeout=self.settings.nats_connect_timeout_s,
            allow_reconnect=False,
            max_reconnect_attempts=0,
            name="meterbridge-streaming",
            **connect_options(self.settings),
            disconnected_cb=_disconnected,
            closed_cb=_disconnected,
            error_cb=_ignore_error,
        )
        self._js = self._nc.jetstream(timeout=self.settings.nats_connect_timeout_s)
        info = await self._ensure_stream(self._js)
        first_seq, last_seq = int(info.state.first_seq), int(info.state.last_seq)
        if not self._started:
            self._set_first_position((last_seq, 0))
        elif last_seq < self.position[0]:
            # The stream was recreated (a sidecar without storage restarted): old ids are void.
            logger.warning(
                "stream is behind the bridge; restarting from its first message",
                extra={"bridge_seq": self.position[0], "stream_last_seq": last_seq},
            )
            self.position = (max(0, first_seq - 1), 0)
            self._fallback.clear()
            for callback in self._on_stream_reset:
                callback(self.position)
        start = self.position[0] + 1
        self._sub = await self._js.subscribe(
            STREAM_SUBJECTS[0],
            stream=self.settings.nats_stream,
            cb=self._on_message,
            ordered_consumer=True,
            idle_heartbeat=self.idle_heartbeat_s,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start
            ),
        )

    def _set_first_position(self, position: Position) -> None:
        self._started = True
        self.position = max(self.position, position)
        for callback in self._on_first_position:
            callback(self.position)

    async def _ensure_stream(self, js: Any) -> Any:
        """The stream's info; created with ``NATS_STREAM_REPLICAS`` replicas if missing."""
        from nats.js.api import StorageType, StreamConfig
        from nats.js.errors import NotFoundError

        try:
            return await js.stream_info(self.settings.nats_stream)
        except NotFoundError:
            await js.add_stream(
                StreamConfig(
                    name=self.settings.nats_stream,
                    subjects=STREAM_SUBJECTS,
                    duplicate_window=float(DUPLICATE_WINDOW_S),
                    max_age=float(MAX_AGE_S),
                    num_replicas=self.settings.nats_stream_replicas,
                    storage=StorageType.FILE,
                )
            )
            return await js.stream_info(self.settings.nats_stream)

    async def _close_quietly(self) -> None:
        nc, self._nc, self._js, self._sub = self._nc, None, None, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()

    # -- events in ------------------------------------------------------------------------
    async def _on_message(self, msg: Any) -> None:
        seq, stored_at = _seq_and_time(msg)
        if seq <= self.position[0]:
            return  # already delivered (a consumer restarted at an older point)
        self.position = (seq, 0)
        msg_id = msg.headers.get("Nats-Msg-Id") if msg.headers else None
        if msg_id is not None and msg_id in self._fallback:
            return  # the republished copy of an event the fallback bus already delivered
        tenant_id = tenant_of(msg.subject)
        if tenant_id is None:
            return
        kind = msg.subject.rsplit(".", 1)[-1]
        self._dispatch(
            StreamEvent(
                position=(seq, 0),
                tenant_id=tenant_id,
                kind=kind,
                event_type=_event_type(msg.data, kind),
                payload=msg.data,
                stored_at=stored_at,
                msg_id=msg_id,
                origin="jetstream",
            )
        )

    def _dispatch(self, event: StreamEvent) -> None:
        _child(NATS_MESSAGES_DELIVERED, event.origin).inc()
        for consumer in self._consumers:
            try:
                consumer(event)
            except Exception:  # noqa: BLE001 - one consumer's bug must not starve the others
                logger.exception("stream consumer failed", extra={"consumer": repr(consumer)})

    # -- events out -----------------------------------------------------------------------
    async def publish(self, subject: str, payload: dict[str, Any], msg_id: str) -> bool:
        """Publish one CloudEvent; True when JetStream stored it.

        False means it went through the in-memory fallback bus only: the caller keeps it
        (the outbox) and republishes it later with the same ``msg_id``.
        """
        data = json.dumps(payload, separators=(",", ":")).encode()
        kind = subject.rsplit(".", 1)[-1]
        js = self._js
        if js is not None and self.connected:
            try:
                await js.publish(subject, data, headers={"Nats-Msg-Id": msg_id})
            except Exception as exc:  # noqa: BLE001 - a failed publish falls back, never raises
                logger.warning("nats publish failed; fallback", extra={"error": type(exc).__name__})
            else:
                NATS_MESSAGES_PUBLISHED.labels(kind).inc()
                return True
        self._publish_fallback(subject, data, msg_id, kind)
        return False

    def _publish_fallback(self, subject: str, data: bytes, msg_id: str, kind: str) -> None:
        tenant_id = tenant_of(subject)
        if tenant_id is None or msg_id in self._fallback:
            return
        base, n = self.position
        position = (base, n + 1)
        self.position = position
        self._fallback[msg_id] = position
        if len(self._fallback) > FALLBACK_MEMORY:
            self._fallback.popitem(last=False)
        self._dispatch(
            StreamEvent(
                position=position,
                tenant_id=tenant_id,
                kind=kind,
                event_type=_event_type(data, kind),
                payload=data,
                stored_at=time.time(),
                msg_id=msg_id,
                origin="fallback",
            )
        )

    # -- replay ---------------------------------------------------------------------------
    async def stream_bounds(self) -> tuple[int, int]:
        """(first_seq, last_seq) of the stream; raises if NATS is unreachable."""
        if self._js is None:
            raise ConnectionError("nats is not connected")
        info = await self._js.stream_info(self.settings.nats_stream)
        return int(info.state.first_seq), int(info.state.last_seq)

    async def replay(
        self, tenant_id: str, after: Position, until_seq: int
    ) -> AsyncIterator[StreamEvent]:
        """The tenant's JetStream events with ``after`` < position and seq <= ``until_seq``.

        An ephemeral pull consumer filtered on the tenant's subjects, from ``after[0] + 1``
        (pull, so its pending count is exact before the first fetch). Copies of fallback
        events the client already had (fallback position <= ``after``) are skipped; later
        ones are delivered once, at their JetStream sequence.
        """
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        if self._js is None:
            raise ConnectionError("nats is not connected")
        if until_seq <= after[0]:
            return
        psub = await self._js.pull_subscribe(
            tenant_filter(tenant_id),
            stream=self.settings.nats_stream,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=after[0] + 1,
                ack_policy=AckPolicy.NONE,
                inactive_threshold=10.0,
                mem_storage=True,
                num_replicas=1,
            ),
        )
        try:
            info = await psub.consumer_info()
            if int(info.num_pending) == 0:
                return
            while True:
                msgs = await psub.fetch(256, timeout=self.settings.nats_connect_timeout_s * 2)
                for msg in msgs:
                    meta = msg.metadata
                    seq = int(meta.sequence.stream)
                    if seq > until_seq:
                        return
                    msg_id = msg.headers.get("Nats-Msg-Id") if msg.headers else None
                    seen = self._fallback.get(msg_id) if msg_id else None
                    if seen is None or seen > after:
                        kind = msg.subject.rsplit(".", 1)[-1]
                        yield StreamEvent(
                            position=(seq, 0),
                            tenant_id=tenant_id,
                            kind=kind,
                            event_type=_event_type(msg.data, kind),
                            payload=msg.data,
                            stored_at=meta.timestamp.timestamp(),
                            msg_id=msg_id,
                            origin="jetstream",
                        )
                    if seq >= until_seq or int(meta.num_pending) == 0:
                        return
        finally:
            with contextlib.suppress(Exception):
                await psub.unsubscribe()

    # -- health ---------------------------------------------------------------------------
    async def health(self) -> dict[str, Any]:
        state = self.breaker.state.name.lower()
        if not self.enabled:
            return {"status": "disabled", "breaker": state, "fallback": True}
        return {
            "status": "up" if self.connected else "down",
            "breaker": state,
            "fallback": self.fallback_active,
            "position": format_id(self.position),
        }


def metering_consumer(event: StreamEvent) -> None:
    """The bridge's observability/metering consumer: per-kind counts of live events."""
    _child(STREAM_EVENTS_BY_KIND, event.kind).inc()


# Labelled children of per-event counters: ``labels()`` takes a lock and builds a key on
# every call; these few label values are looked up once.
_CHILDREN: dict[tuple[int, str], Any] = {}


def _child(metric: Any, value: str) -> Any:
    key = (id(metric), value)
    child = _CHILDREN.get(key)
    if child is None:
        child = _CHILDREN[key] = metric.labels(value)
    return child


def _seq_and_time(msg: Any) -> tuple[int, float]:
    """The stream sequence and store time (epoch seconds) of a live JetStream message.

    Read straight from the reply subject (``$JS.ACK.<stream>.<consumer>.<delivered>.<seq>.
    <cons seq>.<ns>.<pending>``, or the v2 form with domain and account hash first):
    ``msg.metadata`` builds datetimes and dataclasses per message, a measurable share of
    the per-event cost. Anything unexpected goes through ``msg.metadata`` (which raises for
    a message without JetStream metadata).
    """
    tokens = msg.reply.split(".") if msg.reply else []
    if tokens[:2] == ["$JS", "ACK"]:
        if len(tokens) == _V1_TOKENS:
            seq, nanos = tokens[5], tokens[7]
        elif len(tokens) >= _V2_TOKENS:
            seq, nanos = tokens[7], tokens[9]
        else:
            seq = nanos = ""
        if seq.isdigit() and nanos.isdigit():
            return int(seq), int(nanos) / 1e9
    meta = msg.metadata
    return int(meta.sequence.stream), meta.timestamp.timestamp()


# Token counts of JetStream reply subjects: v1, and v2 (domain, account hash; the trailing
# random token is optional).
_V1_TOKENS = 9
_V2_TOKENS = 11


def _event_type(data: bytes, kind: str) -> str:
    """The CloudEvent ``type`` (the SSE event name), or the subject's kind if unreadable."""
    try:
        value = json.loads(data).get("type")
    except (ValueError, AttributeError):
        return kind
    return value if isinstance(value, str) and value else kind


async def _ignore_error(exc: Exception) -> None:
    # Connection errors surface through the disconnected/closed callbacks and the breaker.
    logger.debug("nats client error", extra={"error": type(exc).__name__})
