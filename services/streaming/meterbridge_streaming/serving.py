"""uvicorn as meterbridge runs it: read deadlines and header limits (slowloris).

uvicorn's own ``timeout_keep_alive`` only runs between requests, after a response: a client
that connects and sends nothing, or dribbles its headers or body a byte at a time, holds a
connection for ever. ``GuardedH11Protocol`` adds two deadlines to uvicorn's h11 protocol:

- headers: from the connection (or the first byte of the next request on a kept-alive one)
  until the request's headers are complete, at most ``HEADER_TIMEOUT_S``;
- body: from the end of the headers until the body is complete, at most ``BODY_TIMEOUT_S``
  (1 MB at 35 KB/s).

Past a deadline the connection is closed. Once a request is read, nothing limits the response
(an SSE stream lasts as long as the client stays). Header bytes are capped by h11
(``h11_max_incomplete_event_size``: a bigger header block is a 400).

Used by every uvicorn server the product starts: ``meterbridge dev``, the streaming service
(``services/streaming/app.py``) and the loopback servers of the stand-ins and tests.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 30.0
KEEP_ALIVE_S = 5
MAX_HEADER_BYTES = 16 * 1024


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with header and body read deadlines."""

    header_timeout_s = HEADER_TIMEOUT_S
    body_timeout_s = BODY_TIMEOUT_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._phase: str | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm("headers", self.header_timeout_s)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow(idle_is_headers=True)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Idle between requests is uvicorn's keep-alive timer's; the next byte re-arms ours.
        self._follow(idle_is_headers=False)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _follow(self, *, idle_is_headers: bool) -> None:
        """Arm the deadline of the phase the client is in (the clock runs from its start)."""
        state = self.conn.their_state
        if state is h11.IDLE:
            if idle_is_headers:
                self._arm("headers", self.header_timeout_s)
            else:
                self._disarm()
        elif state is h11.SEND_BODY:
            self._arm("body", self.body_timeout_s)
        else:
            self._disarm()

    def _arm(self, phase: str, seconds: float) -> None:
        if self._phase == phase and self._deadline is not None:
            return  # same phase: the first deadline stands, more bytes do not extend it
        self._disarm()
        self._phase = phase
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = None
        self._phase = None

    def _expired(self) -> None:
        phase, self._deadline, self._phase = self._phase, None, None
        if self.transport is not None and not self.transport.is_closing():
            self.logger.info("closing a connection: request %s not read in time", phase)
            self.transport.close()


def uvicorn_options(**overrides: Any) -> dict[str, Any]:
    """``uvicorn.Config``/``uvicorn.run`` keyword arguments with the guards, then ``overrides``."""
    return {
        "http": GuardedH11Protocol,
        "timeout_keep_alive": KEEP_ALIVE_S,
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
        **overrides,
    }
