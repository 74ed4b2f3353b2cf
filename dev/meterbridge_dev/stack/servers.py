"""Run an ASGI app with uvicorn on loopback in a background thread.

``BackgroundServer(app).start()`` binds the socket itself (so with ``port=0`` the real port is
known before uvicorn starts), serves in a daemon thread, waits until uvicorn reports
``started`` and returns the base URL. ``stop()`` asks uvicorn to exit (``should_exit``), gives
in-flight requests ``graceful_timeout`` seconds, then forces the exit. Also a context manager::

    with BackgroundServer(create_app()) as server:
        httpx.get(f"{server.url}/health")
"""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn

from meterbridge_streaming.serving import uvicorn_options


class BackgroundServer:
    """One uvicorn server for ``app`` on ``host:port`` (``port=0``: a free port)."""

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        log_level: str = "warning",
        graceful_timeout: float = 1.0,
        startup_timeout: float = 10.0,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.log_level = log_level
        self.graceful_timeout = graceful_timeout
        self.startup_timeout = startup_timeout
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:50123`` (valid once started)."""
        if self._server is None:
            raise RuntimeError("server not started")
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> str:
        """Start serving; return the base URL once uvicorn accepts connections."""
        if self._server is not None:
            raise RuntimeError("server already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(128)
            sock.set_inheritable(True)
        except OSError:
            sock.close()
            raise
        self._socket = sock
        self.port = int(sock.getsockname()[1])

        config = uvicorn.Config(
            self.app,
            **uvicorn_options(
                host=self.host,
                port=self.port,
                log_level=self.log_level,
                access_log=False,
                lifespan="auto",
                timeout_graceful_shutdown=max(1, round(self.graceful_timeout)),
            ),
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name=f"uvicorn-{self.port}", daemon=True)
        self._thread.start()

        deadline = time.monotonic() + self.startup_timeout
        while not self._server.started:
            if not self._thread.is_alive():
                self._cleanup_socket()
                raise RuntimeError(f"server on port {self.port} failed to start: {self._error!r}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(
                    f"server on port {self.port} did not start in {self.startup_timeout}s"
                )
            time.sleep(0.01)
        return self.url

    def _run(self) -> None:
        assert self._server is not None and self._socket is not None
        try:
            self._server.run(sockets=[self._socket])
        except BaseException as exc:  # noqa: BLE001 - reported by start()/stop()
            self._error = exc

    def stop(self, timeout: float = 5.0) -> None:
        """Ask uvicorn to exit and wait for the thread; force the exit if it lingers."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(self.graceful_timeout + 1.5)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout)
        self._cleanup_socket()
        self._server = None
        self._thread = None

    def _cleanup_socket(self) -> None:
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.close()
            self._socket = None

    def __enter__(self) -> BackgroundServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve_until_signalled(app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
    """The ``python -m`` entry of the stand-ins: serve ``app``, print one line
    ``listening on http://HOST:PORT`` (flushed), and run until SIGTERM or SIGINT."""
    stop = threading.Event()

    def _on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    server = BackgroundServer(app, host=host, port=port)
    url = server.start()
    print(f"listening on {url}", flush=True)
    try:
        while not stop.is_set() and server.running:
            stop.wait(0.2)
    finally:
        server.stop()
    sys.stdout.flush()
