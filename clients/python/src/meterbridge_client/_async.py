"""``AsyncClient``: record from the event loop; one background task sends the batches."""

from __future__ import annotations

import asyncio
import contextlib
import time as _time
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


class AsyncClient:
    """The asyncio twin of ``Client``. Call ``record()`` from the event loop's thread (it is a
    plain, non-blocking method); ``await client.aclose()`` (or ``async with``) drains it.

    With ``on_full="block"``, ``await client.arecord(...)`` waits for room up to
    ``block_timeout``; plain ``record()`` cannot wait without blocking the loop, so on a full
    buffer it drops and counts the event under either policy.
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
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._core = Core(
            Config(
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
        )
        self._inbox = self._core.inbox
        self._ids = self._core.ids
        self._taken = 0
        self._settled = 0
        self._flush_to = 0
        self._closing = False
        self._abort = False
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=timeout)
        self._wake: asyncio.Event | None = None
        self._changed: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    # -- the caller's side ---------------------------------------------------------------

    def start(self) -> None:
        """Start the sender task (``record()`` does it on first use inside a running loop)."""
        if self._task is None and not self._core.closed:
            self._wake = asyncio.Event()
            self._changed = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run())

    def record(
        self,
        type: str,
        data: dict[str, Any] | None = None,
        *,
        subject: str | None = None,
        id: str | None = None,
        time: datetime | str | None = None,
    ) -> str:
        """Buffer one event and return its id (see ``Client.record``)."""
        entry = make_entry(type, data, subject, id, time, self._ids)
        inbox = self._inbox
        if len(inbox) >= self._core.cap or self._task is None:
            self._admit(entry)
            return entry[0]
        inbox.append(entry)
        if len(inbox) >= self._core.kick_at:
            self._poke()
        return entry[0]

    async def arecord(
        self,
        type: str,
        data: dict[str, Any] | None = None,
        *,
        subject: str | None = None,
        id: str | None = None,
        time: datetime | str | None = None,
    ) -> str:
        """Like ``record()``; with ``on_full="block"`` waits up to ``block_timeout`` for room."""
        entry = make_entry(type, data, subject, id, time, self._ids)
        core = self._core
        if core.config.on_full == "block" and core.full():
            deadline = _time.monotonic() + core.config.block_timeout
            while core.full() and not core.closed:
                left = deadline - _time.monotonic()
                if left <= 0:
                    break
                self._poke()
                await self._wait_changed(left)
        self._admit(entry)
        return entry[0]

    def _admit(self, entry: Entry) -> None:
        core = self._core
        if core.closed or self._closing:
            core.drop("the client is closed")
        elif core.full():
            core.drop("the buffer is full")
        else:
            core.admit(entry)
            self.start()
            if len(core.inbox) >= core.kick_at:
                self._poke()

    async def flush(self, timeout: float | None = None) -> bool:
        """Send everything recorded so far; True when it is all settled."""
        self.start()
        target = self._core.moved + len(self._inbox)
        self._flush_to = max(self._flush_to, target)
        self._poke()
        deadline = None if timeout is None else _time.monotonic() + timeout
        while self._settled < target and self._task is not None and not self._task.done():
            left = None if deadline is None else deadline - _time.monotonic()
            if left is not None and left <= 0:
                return False
            await self._wait_changed(left)
        return self._settled >= target

    async def aclose(self, timeout: float | None = None) -> None:
        """Drain the buffer (up to ``timeout``, default ``close_timeout``) and stop."""
        if self._closing:
            return
        timeout = self._core.config.close_timeout if timeout is None else timeout
        if self._core.ready or self._inbox:
            self.start()
        self._closing = True
        self._poke()
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=timeout)
            if not done:
                self._abort = True
                self._poke()
                self._task.cancel()
                await asyncio.wait({self._task}, timeout=self._core.config.timeout + 1)
        self._core.closed = True
        self._core.refresh()
        self._core.give_up([])  # recorded after the sender's last look: counted
        if self._owns_http:
            await self._http.aclose()
        self._core.log_close()

    def stats(self) -> Stats:
        return self._core.stats()

    async def __aenter__(self) -> AsyncClient:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the sender task -----------------------------------------------------------------

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _announce(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = asyncio.Event()

    async def _wait_changed(self, timeout: float | None) -> None:
        if self._changed is None:
            await asyncio.sleep(timeout or 0)
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    async def _encode_all(self) -> None:
        """Encode what waits, a slice at a time, yielding to the loop between slices, until
        the inbox is empty or a batch is due; top up record()'s id pool first."""
        core = self._core
        core.ids.fill()
        while self._inbox and not core.due():
            bad = core.encode_some(ENCODE_SLICE)
            if bad:
                self._taken += len(bad)
                core.refuse(bad)
                self._settled += len(bad)
            self._announce()
            if self._inbox:
                await asyncio.sleep(0)

    async def _next_batch(self) -> list[Pending] | None:
        core = self._core
        assert self._wake is not None
        while not self._abort:
            await self._encode_all()
            wait = core.batch_wait(self._closing, self._flush_to > self._taken)
            if wait == 0:
                part = core.take()
                self._taken += len(part)
                self._announce()
                return part
            if wait is None and self._closing and not self._inbox:
                return None
            self._wake.clear()
            if self._inbox and (len(self._inbox) >= core.kick_at or self._closing):
                continue
            interval = core.config.flush_interval
            tick = min(ENCODE_TICK, interval) if self._inbox or core.ready else interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), tick if wait is None else min(wait, tick))
        return None

    async def _run(self) -> None:
        try:
            while True:
                part = await self._next_batch()
                if part is None:
                    break
                await self._deliver(part)
                self._settled += len(part)
                self._announce()
        except Abort as stop:
            self._core.give_up(stop.args[0])
        except asyncio.CancelledError:
            self._core.give_up([])
            raise
        finally:
            if self._abort:
                self._core.give_up([])
            self._announce()

    async def _deliver(self, part: list[Pending]) -> None:
        todo = [part]
        while todo:
            piece = todo.pop()
            try:
                resp = await self._post(piece)
            except (Abort, asyncio.CancelledError):
                self._core.give_up([piece, *todo])
                raise
            out = decide(piece, resp)
            self._core.settle(piece, out)
            todo.extend(reversed(out.resend))

    async def _post(self, piece: list[Pending]) -> httpx.Response:
        config = self._core.config
        body = encode_batch(piece)
        attempt = 0
        while True:
            resp: httpx.Response | None = None
            reason = ""
            self._core.requests += 1
            try:
                resp = await self._http.post(config.url, content=body, headers=config.headers)
            except httpx.TransportError as exc:
                reason = type(exc).__name__
            delay = self._core.retry_delay(piece, attempt, resp, reason)
            if delay is None and resp is not None:
                return resp
            attempt += 1
            deadline = _time.monotonic() + (delay or 0)
            while True:  # encode what arrives meanwhile: the byte bound stays exact
                if self._abort:
                    raise Abort([])
                await self._encode_all()
                left = deadline - _time.monotonic()
                if left <= 0:
                    break
                await asyncio.sleep(min(left, ENCODE_TICK))
