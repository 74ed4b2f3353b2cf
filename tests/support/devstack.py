"""Start ``meterbridge dev`` as a user does (a subprocess), and run CLI commands against it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from meterbridge_dev.stack.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
# Variables that would aim the stack or the CLI somewhere else than its own stand-ins.
FOREIGN = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_DYNAMODB",
    "NATS_SERVERS",
    "OPENMETER_BASE_URL",
    "NATS_ENABLED",
    "OPENMETER_ENABLED",
    "STRIPE_API_KEY",
    "STRIPE_API_BASE",
    "METERBRIDGE_URL",
    "METERBRIDGE_ADMIN_TOKEN",
    "METERBRIDGE_STACK_NAME",
    "AWS_PROFILE",
    # The suite's placeholder table names (tests/conftest.py): a CLI run with them would
    # target those tables instead of finding the local stack (or its absence).
    "TENANTS_TABLE",
    "EVENTS_TABLE",
    "USAGE_TABLE",
    "IDEMPOTENCY_TABLE",
)


@dataclass
class Dev:
    proc: subprocess.Popen[bytes]
    base: str
    state_file: Path
    log: Path
    env: dict[str, str]

    def cli(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``meterbridge ARGS`` in a fresh process against this stack."""
        return subprocess.run(
            [sys.executable, "-m", "meterbridge_dev.cli.main", *args],
            cwd=ROOT,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=120,
        )

    def cli_json(self, *args: str, env: dict[str, str] | None = None) -> dict | list:
        done = self.cli(*args, "--json", env=env)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def base_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN}
    env.update(
        {
            "METERBRIDGE_STATE_FILE": str(tmp_path / "state" / "dev.json"),
            "PYTHONUNBUFFERED": "1",
            "COLUMNS": "200",
        }
    )
    env.update(extra)
    return env


@contextmanager
def running_dev(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Dev]:
    """``meterbridge dev ARGS`` on a free port, ready (state file written, /health/live 200)."""
    port = free_port()
    env = {**base_env(tmp_path), **(env or {})}
    log = tmp_path / "dev.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "meterbridge_dev.cli.main", "dev", "--port", str(port), *args],
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    dev = Dev(proc, f"http://127.0.0.1:{port}", Path(env["METERBRIDGE_STATE_FILE"]), log, env)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "meterbridge dev not ready:\n" + log.read_text()
            if dev.state_file.is_file():
                try:
                    if httpx.get(f"{dev.base}/health/live", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
            time.sleep(0.2)
        yield dev
    finally:
        dev.stop()
