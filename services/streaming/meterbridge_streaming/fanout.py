"""Fan-out of stream events to SSE clients: one frame per event, a bounded queue per client.

Positions order every event this process delivers: a JetStream event is ``(seq, 0)``, an event
of the in-memory fallback bus is ``(base, n)`` where ``base`` is the last JetStream sequence
seen before it and ``n`` counts fallback events since. The SSE id is ``"seq"`` or
``"base.n"`` and ``Last-Event-ID`` is parsed back into a position (docs/streaming.md).

Everything here runs on the event loop thread: ``dispatch`` never awaits, so registering a
client and snapshotting the replay buffer happen between two dispatches, never during one.
A caught-up client's frame is written to its socket buffer by ``dispatch`` itself (one
ASGI ``send`` stepped synchronously, no task wake-up per frame); only a write that would
wait for the socket is left to the client's own task (see ``SSEClient``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from dataclasses import dataclass
from typing import Any

from meterbridge_streaming.metrics import (
    SSE_CLIENTS_CONNECTED,
    SSE_CLIENTS_DROPPED,
    SSE_EVENTS_DELIVERED,
    STREAM_DELIVERY_LATENCY,
)

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


# Starts the write of one body chunk to a client: ``send(http.response.body)`` unawaited.
BodyWriter = Callable[[bytes], Coroutine[Any, Any, None]]


class _Rest:
    """The rest of a write that suspended (its socket was full), awaited by the client's task.

    ``send`` runs to completion without suspending while the socket takes the data (the usual
    case: uvicorn writes to the transport and returns), so ``dispatch`` steps it synchronously;
    when it does suspend (flow control: the transport is over its high-water mark), the
    future it waits on is handed to the client's own task through this awaitable, which
    delegates exactly like ``await`` would (results, exceptions, cancellation).
    """

    __slots__ = ("_blocker", "_coro")

    def __init__(self, coro: Coroutine[Any, Any, None], blocker: Any) -> None:
        self._coro = coro
        self._blocker = blocker

    def __await__(self) -> Generator[Any, None, None]:
        blocker = self._blocker
        while True:
            try:
                yield blocker
            except BaseException as exc:  # noqa: BLE001 - cancellation (any throw) goes to the write
                try:
                    blocker = self._coro.throw(exc)
                except StopIteration:
                    return
                continue
            try:
                blocker = self._coro.send(None)
            except StopIteration:
                return

    def close(self) -> None:
        self._coro.close()


class SSEClient:
    """One connected client: a bounded FIFO of frames, or direct writes once caught up.

    Queued mode (replay, a full socket, tests): ``offer`` appends to a bounded FIFO that the
    client's task drains with one write per batch. Direct mode (live and caught up, the
    steady state): ``offer`` writes the frame to the client's socket buffer itself, with no
    task wake-up per frame; a write that would wait for the socket switches the client back
    to queued mode. ``offer`` never blocks: a full queue closes the client with
    ``slow_consumer`` so one slow reader never holds up the others; it reconnects with
    ``Last-Event-ID`` and loses nothing.
    """

    __slots__ = (
        "_buf",
        "_waiter",
        "closed",
        "error",
        "handoff",
        "key_id",
        "max_queue",
        "skip_until",
        "stalled",
        "task",
        "tenant_id",
        "touched",
        "writer",
    )

    def __init__(
        self, tenant_id: str, max_queue: int, handoff: Position, key_id: str | None = None
    ) -> None:
        self.tenant_id = tenant_id
        # The API key behind the stream (directly or through a stream token).
        self.key_id = key_id
        self.max_queue = max_queue
        # The bridge position when the client registered: live frames are all after it.
        self.handoff = handoff
        # Live frames at or before this position are skipped (a client ahead of this task).
        self.skip_until: Position = (-1, 0)
        self._buf: deque[tuple[float, bytes]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.closed: str | None = None
        self.touched = False
        self.task: asyncio.Task[Any] | None = None
        # Direct mode: set only while the queue is empty and no write is stalled.
        self.writer: BodyWriter | None = None
        # A direct write that suspended: (stored_at, frame, the rest for the client's task).
        self.stalled: tuple[float, bytes, _Rest] | None = None
        # What a direct write raised: the client's task re-raises it.
        self.error: BaseException | None = None

    def offer(self, position: Position, stored_at: float, frame: bytes) -> bool:
        """Write or queue ``frame``; True when it was written here (direct mode)."""
        if self.closed is not None or position <= self.skip_until:
            return False
        self.touched = True
        writer = self.writer
        if writer is not None:
            return self._write(writer, stored_at, frame)
        if len(self._buf) >= self.max_queue:
            self.close("slow_consumer")
            return False
        self._buf.append((stored_at, frame))
        self._wake()
        return False

    def offer_heartbeat(self) -> None:
        if self.closed is not None:
            return
        writer = self.writer
        if writer is not None:
            self._write(writer, 0.0, HEARTBEAT_FRAME)
        elif len(self._buf) < self.max_queue:
            self._buf.append((0.0, HEARTBEAT_FRAME))
            self._wake()

    def _write(self, writer: BodyWriter, stored_at: float, frame: bytes) -> bool:
        """Step the write of ``frame`` until it completes (True) or would wait (False)."""
        coro = writer(frame)
        try:
            blocker = coro.send(None)
        except StopIteration:
            return True
        except Exception as exc:  # noqa: BLE001 - one client's failure must not stop the fan-out
            self.error = exc
            self.close("error")
            return False
        # The socket is full: the client's task finishes this write; later frames queue.
        self.writer = None
        self.stalled = (stored_at, frame, _Rest(coro, blocker))
        self._wake()
        return False

    def go_direct(self, writer: BodyWriter) -> None:
        """Caught up (nothing queued or stalled): let ``offer`` write through ``writer``."""
        if self.closed is None and not self._buf and self.stalled is None:
            self.writer = writer

    def close(self, reason: str) -> None:
        if self.closed is not None:
            return
        self.closed = reason
        self.writer = None
        if reason == "slow_consumer":
            # Its reader is behind: what is queued would only delay the drop notice. Its
            # writer may be blocked on a socket that never drains: cut it after a grace.
            self._buf.clear()
            if self.task is not None:
                asyncio.get_running_loop().call_later(STALLED_WRITE_GRACE_S, self._cut)
        if reason not in ("disconnected", "error"):
            SSE_CLIENTS_DROPPED.labels(reason).inc()
        self._wake()

    def _cut(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        """Until there is work for the client's task: queued frames, a stalled write, or
        the client closed."""
        while not self._buf and self.stalled is None and self.closed is None:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def take_stalled(self) -> tuple[float, bytes, _Rest] | None:
        stalled, self.stalled = self.stalled, None
        return stalled

    def take_queued(self) -> list[tuple[float, bytes]]:
        """Every queued frame (possibly none); nothing once dropped as a slow consumer."""
        if self.closed == "slow_consumer" or not self._buf:
            return []
        batch = list(self._buf)
        self._buf.clear()
        return batch

    async def next_batch(self) -> list[tuple[float, bytes]] | None:
        """Every queued frame (at least one), or None once closed and drained (queued mode)."""
        while True:
            batch = self.take_queued()
            if batch:
                return batch
            if self.closed is not None:
                return None
            await self.wait()


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
    def register(self, tenant_id: str, handoff: Position, key_id: str | None = None) -> SSEClient:
        client = SSEClient(tenant_id, self.queue_size, handoff, key_id)
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

    def tenant_client_count(self, tenant_id: str) -> int:
        return len(self._clients.get(tenant_id, ()))

    def open_keys(self) -> set[tuple[str, str]]:
        """(tenant_id, key_id) of every open stream that has a key behind it."""
        return {
            (tenant_id, client.key_id)
            for tenant_id, clients in self._clients.items()
            for client in clients
            if client.key_id is not None
        }

    def close_tenant(self, tenant_id: str, reason: str, key_id: str | None = None) -> int:
        """Close the tenant's streams (only those of ``key_id`` if given); how many."""
        closed = 0
        for client in list(self._clients.get(tenant_id, ())):
            if key_id is None or client.key_id == key_id:
                client.close(reason)
                closed += 1
        return closed

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
            written = 0
            for client in clients:
                if client.offer(position, stored_at, frame):
                    written += 1
            if written:
                # Once per fan-out, not per client: every direct write of this event
                # happened just now, the last one at this time.
                SSE_EVENTS_DELIVERED.inc(written)
                STREAM_DELIVERY_LATENCY.observe(max(0.0, time.time() - stored_at))

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
