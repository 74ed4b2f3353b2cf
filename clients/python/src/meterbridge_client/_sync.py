"""``Client``: record from any thread; one background thread sends the batches."""

from __future__ import annotations

import atexit
import threading
import time as _time
import weakref
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx

from meterbridge_client._core import (
    ENCODE_SLICE,
    ENCODE_TICK,
    Abort,
    Config,
    Core,
    Entry,
    FullPolicy,
    Pending,
    RejectedEvent,
    Stats,
    decide,
    encode_batch,
    make_entry,
)


class Client:
    """Buffers events and sends them in batches from a background thread.

    ``record()`` returns at once: it never does network I/O and never raises on a network
    fault. See the package README for the delivery guarantees and the buffer policies.
    """

    def __init__(
        self,
        api_key: str,
        base_url: str = "http://127.0.0.1:8000",
        *,
        max_batch_events: int = 500,
        max_batch_bytes: int = 900_000,
        flush_interval: float = 1.0,
        max_buffer_events: int = 100_000,
        max_buffer_bytes: int = 64 * 1024 * 1024,
        on_full: FullPolicy = "block",
        block_timeout: float = 1.0,
        backoff_base: float = 0.1,
        backoff_max: float = 30.0,
        timeout: float = 10.0,
        close_timeout: float = 10.0,
        durable_path: str | None = None,
        on_rejected: Callable[[RejectedEvent], None] | None = None,
        http_client: httpx.Client | None = None,
        close_at_exit: bool = True,
    ) -> None:
        config = Config(
            api_key=api_key,
            base_url=base_url,
            max_batch_events=max_batch_events,
            max_batch_bytes=max_batch_bytes,
            flush_interval=flush_interval,
            max_buffer_events=max_buffer_events,
            max_buffer_bytes=max_buffer_bytes,
            on_full=on_full,
            block_timeout=block_timeout,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            timeout=timeout,
            close_timeout=close_timeout,
            durable_path=durable_path,
            on_rejected=on_rejected,
        )
        self._core = Core(config)
        self._inbox = self._core.inbox
        self._ids = self._core.ids
        self._cond = threading.Condition(threading.Lock())
        self._abort = threading.Event()
        self._idle = False  # the sender waits on _cond (record() wakes it when a batch is due)
        self._blocked = 0  # record() calls waiting for room
        self._taken = 0  # events handed to the sender's batches (or refused)
        self._settled = 0  # events the sender is done with
        self._flush_to = 0
        self._closing = False
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(timeout=timeout)
        self._thread = threading.Thread(target=self._run, name="meterbridge-client", daemon=True)
        self._thread.start()
        if close_at_exit:
            atexit.register(_close_at_exit, weakref.ref(self))

    # -- the caller's side ---------------------------------------------------------------

    def record(
        self,
        type: str,
        data: dict[str, Any] | None = None,
        *,
        subject: str | None = None,
        id: str | None = None,
        time: datetime | str | None = None,
    ) -> str:
        """Buffer one event; return its id. Raises only for arguments of the wrong shape
        (``ValueError``, ``TypeError``): a programming error, not a delivery problem.

        The fast path takes no lock and encodes nothing: an id, a shallow copy of ``data``,
        one append (atomic), two length checks. The sender encodes (docs in the README)."""
        entry = make_entry(type, data, subject, id, time, self._ids)
        inbox = self._inbox
        if len(inbox) >= self._core.cap:  # full, closed or durable
            self._record_slow(entry)
            return entry[0]
        inbox.append(entry)
        if len(inbox) >= self._core.kick_at and self._idle:
            with self._cond:
                self._idle = False
                self._cond.notify_all()
        return entry[0]

    def _record_slow(self, entry: Entry) -> None:
        core = self._core
        with self._cond:
            if core.closed:
                core.drop("the client is closed")
                return
            if core.full():
                self._idle = False
                self._cond.notify_all()  # the sender encodes what waits: exact room
                self._blocked += 1
                try:
                    room = core.config.on_full == "block" and self._cond.wait_for(
                        lambda: not core.full() or core.closed, core.config.block_timeout
                    )
                finally:
                    self._blocked -= 1
                if not room:
                    core.drop("the buffer is full")
                    return
                if core.closed:
                    core.drop("the client is closed")
                    return
            core.admit(entry)
            if len(core.inbox) >= core.kick_at and self._idle:
                self._idle = False
                self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything recorded so far; True when it is all settled (sent or refused)."""
        with self._cond:
            target = self._core.moved + len(self._inbox)
            self._flush_to = max(self._flush_to, target)
            self._idle = False
            self._cond.notify_all()
            return self._cond.wait_for(
                lambda: self._settled >= target or not self._thread.is_alive(), timeout
            )

    def close(self, timeout: float | None = None) -> None:
        """Drain the buffer (up to ``timeout``, default ``close_timeout``) and stop."""
        timeout = self._core.config.close_timeout if timeout is None else timeout
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._idle = False
            self._cond.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._abort.set()
            with self._cond:
                self._cond.notify_all()
            self._thread.join(self._core.config.timeout + 1)
        with self._cond:
            self._core.closed = True
            self._core.refresh()
            self._core.give_up([])  # recorded after the sender's last look: counted
            self._cond.notify_all()
        if self._owns_http:
            self._http.close()
        self._core.log_close()

    def stats(self) -> Stats:
        with self._cond:
            return self._core.stats()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the sender thread ---------------------------------------------------------------

    def _encode_all(self) -> None:
        """Encode what waits in the inbox, a slice at a time (the lock is let go between
        slices), until it is empty or a batch is due; report what cannot be encoded outside
        the lock; top up record()'s id pool first (no lock: deque operations are atomic)."""
        core = self._core
        core.ids.fill()
        while self._inbox and not core.due():
            with self._cond:
                bad = core.encode_some(ENCODE_SLICE)
                self._taken += len(bad)
                if self._blocked:
                    self._cond.notify_all()
            if bad:
                core.refuse(bad)  # on_rejected may record(): no lock held
                with self._cond:
                    self._settled += len(bad)
                    self._cond.notify_all()

    def _next_batch(self) -> list[Pending] | None:
        core = self._core
        while not self._abort.is_set():
            self._encode_all()
            with self._cond:
                wait = core.batch_wait(self._closing, self._flush_to > self._taken)
                if wait == 0:
                    part = core.take()
                    self._taken += len(part)
                    if self._blocked:
                        self._cond.notify_all()  # room for blocked record() calls
                    return part
                if wait is None and self._closing and not self._inbox:
                    return None
                # Sleep until a batch is due: record() wakes us at kick_at (set now, before
                # _idle, so no wake-up is lost), flush() and close() too; meanwhile wake every
                # tick to encode what arrives, or after the interval when nothing waits.
                self._idle = True
                if self._inbox and (len(self._inbox) >= core.kick_at or self._closing):
                    self._idle = False
                    continue
                interval = core.config.flush_interval
                tick = min(ENCODE_TICK, interval) if self._inbox or core.ready else interval
                self._cond.wait(tick if wait is None else min(wait, tick))
                self._idle = False
        return None

    def _run(self) -> None:
        while True:
            part = self._next_batch()
            if part is None:
                break
            try:
                self._deliver(part)
            except Abort as stop:
                with self._cond:
                    self._core.give_up(stop.args[0] if stop.args else [part])
                break
            with self._cond:
                self._settled += len(part)
                self._cond.notify_all()
        with self._cond:
            if self._abort.is_set():
                self._core.give_up([])
            self._cond.notify_all()

    def _deliver(self, part: list[Pending]) -> None:
        """Settle one batch: retry what may succeed later, split what the server refused."""
        todo = [part]
        while todo:
            piece = todo.pop()
            try:
                resp = self._post(piece)
            except Abort:
                raise Abort([piece, *todo]) from None
            out = decide(piece, resp)
            # Outside the lock: on_rejected may be slow, or record() an event of its own.
            # The counters it moves have this thread as their only writer.
            self._core.settle(piece, out)
            todo.extend(reversed(out.resend))

    def _post(self, piece: list[Pending]) -> httpx.Response:
        config = self._core.config
        body = encode_batch(piece)
        attempt = 0
        while True:
            resp: httpx.Response | None = None
            reason = ""
            self._core.requests += 1
            try:
                resp = self._http.post(config.url, content=body, headers=config.headers)
            except httpx.TransportError as exc:
                reason = type(exc).__name__
            delay = self._core.retry_delay(piece, attempt, resp, reason)
            if delay is None and resp is not None:
                return resp
            attempt += 1
            if self._pause(delay or 0):
                raise Abort

    def _pause(self, delay: float) -> bool:
        """Wait ``delay`` before a retry, encoding what arrives meanwhile (the byte bound
        stays exact during an outage); True when close() has run out of time."""
        deadline = _time.monotonic() + delay
        while True:
            self._encode_all()
            left = deadline - _time.monotonic()
            if left <= 0 or self._abort.wait(min(left, ENCODE_TICK)):
                return self._abort.is_set()


def _close_at_exit(ref: weakref.ref[Client]) -> None:
    client = ref()
    if client is not None:
        client.close()
