"""Fan-out of stream events to SSE clients: one frame per event, a bounded queue per client.

Positions order every event this process delivers: a JetStream event is ``(seq, 0)``, an event
of the in-memory fallback bus is ``(base, n)`` where ``base`` is the last JetStream sequence
seen before it and ``n`` counts fallback events since. The SSE id is ``"seq"`` or
``"base.n"`` and ``Last-Event-ID`` is parsed back into a position (docs/streaming.md).

Everything here runs on the event loop thread: ``dispatch`` never awaits, so registering a
client and snapshotting the replay buffer happen between two dispatches, never during one.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass
from typing import Any

from meterbridge.prometheus import SSE_CLIENTS_CONNECTED, SSE_CLIENTS_DROPPED

Position = tuple[int, int]

HEARTBEAT_FRAME = b": heartbeat\n\n"
# A dropped client whose socket does not drain gets this long before its response is cut.
STALLED_WRITE_GRACE_S = 5.0


def format_id(position: Position) -> str:
    seq, n = position
    return str(seq) if n == 0 else f"{seq}.{n}"


def parse_id(text: str | None) -> Position | None:
    """``"42"`` -> (42, 0); ``"42.3"`` -> (42, 3); anything else -> None."""
    if text is None:
        return None
    seq, _, n = text.strip().partition(".")
    if not seq.isdigit() or (n and not n.isdigit()) or len(text) > 40:
        return None
    return int(seq), int(n or 0)


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One event as the bridge hands it to its consumers."""

    position: Position
    tenant_id: str
    kind: str
    event_type: str
    payload: bytes  # the CloudEvent JSON on one line
    stored_at: float  # epoch seconds: JetStream store time, or fallback publish time
    msg_id: str | None
    origin: str  # "jetstream" or "fallback"


def encode_frame(event: StreamEvent) -> bytes:
    """The SSE frame of ``event``: id, event type, data (built once for all its clients)."""
    payload = event.payload
    if b"\n" in payload or b"\r" in payload:
        # A data line may not contain a newline; compact JSON never does.
        payload = json.dumps(json.loads(payload), separators=(",", ":")).encode()
    event_type = event.event_type.replace("\n", " ").replace("\r", " ")
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (
        format_id(event.position).encode(),
        event_type.encode(),
        payload,
    )


def control_frame(event: str, data: dict[str, Any], retry_ms: int | None = None) -> bytes:
    """A frame without an id (reset, shutdown, dropped): ``Last-Event-ID`` stays put."""
    retry = b"retry: %d\n" % retry_ms if retry_ms is not None else b""
    body = json.dumps(data, separators=(",", ":")).encode()
    return retry + b"event: %s\ndata: %s\n\n" % (event.encode(), body)


class SSEClient:
    """One connected client: a bounded FIFO of frames and a wake-up event.

    ``offer`` never blocks: a full queue closes the client with ``slow_consumer`` so one slow
    reader never holds up the others; it reconnects with ``Last-Event-ID`` and loses nothing.
    """

    __slots__ = (
        "_buf",
        "_wake",
        "closed",
        "handoff",
        "max_queue",
        "skip_until",
        "task",
        "tenant_id",
        "touched",
    )

    def __init__(self, tenant_id: str, max_queue: int, handoff: Position) -> None:
        self.tenant_id = tenant_id
        self.max_queue = max_queue
        # The bridge position when the client registered: live frames are all after it.
        self.handoff = handoff
        # Live frames at or before this position are skipped (a client ahead of this task).
        self.skip_until: Position = (-1, 0)
        self._buf: deque[tuple[float, bytes]] = deque()
        self._wake = asyncio.Event()
        self.closed: str | None = None
        self.touched = False
        self.task: asyncio.Task[Any] | None = None

    def offer(self, position: Position, stored_at: float, frame: bytes) -> None:
        if self.closed is not None or position <= self.skip_until:
            return
        if len(self._buf) >= self.max_queue:
            self.close("slow_consumer")
            return
        self._buf.append((stored_at, frame))
        self.touched = True
        self._wake.set()

    def offer_heartbeat(self) -> None:
        if self.closed is None and len(self._buf) < self.max_queue:
            self._buf.append((0.0, HEARTBEAT_FRAME))
            self._wake.set()

    def close(self, reason: str) -> None:
        if self.closed is not None:
            return
        self.closed = reason
        if reason == "slow_consumer":
            # Its reader is behind: what is queued would only delay the drop notice. Its
            # writer may be blocked on a socket that never drains: cut it after a grace.
            self._buf.clear()
            if self.task is not None:
                asyncio.get_running_loop().call_later(STALLED_WRITE_GRACE_S, self._cut)
        if reason not in ("disconnected",):
            SSE_CLIENTS_DROPPED.labels(reason).inc()
        self._wake.set()

    def _cut(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()

    async def next_batch(self) -> list[tuple[float, bytes]] | None:
        """Every queued frame (at least one), or None once closed and drained."""
        while not self._buf:
            if self.closed is not None:
                return None
            self._wake.clear()
            await self._wake.wait()
        if self.closed == "slow_consumer":
            return None
        batch = list(self._buf)
        self._buf.clear()
        return batch


class FanoutHub:
    """Tenant-indexed fan-out with a replay buffer of the recent events of every tenant."""

    def __init__(self, *, queue_size: int, replay_buffer: int, heartbeat_s: float) -> None:
        self.queue_size = queue_size
        self.heartbeat_s = heartbeat_s
        self._clients: dict[str, set[SSEClient]] = {}
        self._ring: deque[tuple[Position, str, float, bytes]] = deque()
        self._ring_max = replay_buffer
        # The buffer holds every event dispatched after this position (None: nothing known).
        self.floor: Position | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None

    # -- clients --------------------------------------------------------------------------
    def register(self, tenant_id: str, handoff: Position) -> SSEClient:
        client = SSEClient(tenant_id, self.queue_size, handoff)
        self._clients.setdefault(tenant_id, set()).add(client)
        SSE_CLIENTS_CONNECTED.inc()
        return client

    def unregister(self, client: SSEClient) -> None:
        clients = self._clients.get(client.tenant_id)
        if clients is not None and client in clients:
            clients.discard(client)
            SSE_CLIENTS_CONNECTED.dec()
            if not clients:
                del self._clients[client.tenant_id]

    @property
    def client_count(self) -> int:
        return sum(len(c) for c in self._clients.values())

    def close_all(self, reason: str) -> None:
        for clients in list(self._clients.values()):
            for client in list(clients):
                client.close(reason)

    # -- events ---------------------------------------------------------------------------
    def set_floor(self, position: Position) -> None:
        """The bridge first consumes after ``position``: the buffer is complete from there.

        Later reconnects resume the consumer where it stopped, so the buffer stays complete
        and the floor only moves when the buffer evicts.
        """
        if self.floor is None:
            self.floor = position

    def reset(self, position: Position) -> None:
        """The stream was recreated: old positions mean nothing any more."""
        self._ring.clear()
        self.floor = position

    def dispatch(self, event: StreamEvent) -> None:
        frame = encode_frame(event)
        if self._ring_max:
            if len(self._ring) >= self._ring_max:
                self.floor = self._ring.popleft()[0]
            self._ring.append((event.position, event.tenant_id, event.stored_at, frame))
        clients = self._clients.get(event.tenant_id)
        if clients:
            position, stored_at = event.position, event.stored_at
            for client in clients:
                client.offer(position, stored_at, frame)

    def buffered_after(
        self, tenant_id: str, after: Position, until: Position
    ) -> list[tuple[float, bytes]] | None:
        """The tenant's frames in (after, until] if the buffer covers ``after``; else None."""
        if self.floor is None or after < self.floor:
            return None
        out: list[tuple[float, bytes]] = []
        for position, tenant, stored_at, frame in reversed(self._ring):
            if position <= after:
                break
            if position <= until and tenant == tenant_id:
                out.append((stored_at, frame))
        out.reverse()
        return out

    # -- heartbeats -----------------------------------------------------------------------
    def start_heartbeats(self) -> None:
        if self._heartbeat_task is None:
            self._heartbeat_task = asyncio.create_task(self._heartbeats())

    async def stop_heartbeats(self) -> None:
        task, self._heartbeat_task = self._heartbeat_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _heartbeats(self) -> None:
        # One timer for every client; a client that got an event since the last tick is
        # known to be alive and gets no comment frame.
        while True:
            await asyncio.sleep(self.heartbeat_s)
            self.beat()

    def beat(self) -> None:
        for clients in list(self._clients.values()):
            for client in list(clients):
                if client.touched:
                    client.touched = False
                else:
                    client.offer_heartbeat()
