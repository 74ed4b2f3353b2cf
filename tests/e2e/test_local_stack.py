"""The README's first command: ``meterbridge dev`` brings the whole stack up, and down cleanly."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from meterbridge_dev.stack.processes import free_port

ROOT = Path(__file__).resolve().parents[2]


def _listening(url: str) -> bool:
    match = re.search(r"//([\d.]+):(\d+)", url)
    assert match, url
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((match.group(1), int(match.group(2)))) == 0


@pytest.fixture
def dev_stack(tmp_path: Path):
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "AWS_ENDPOINT_URL",
            "NATS_SERVERS",
            "OPENMETER_BASE_URL",
            "NATS_ENABLED",
            "OPENMETER_ENABLED",
            "TENANTS_TABLE",
            "EVENTS_TABLE",
            "USAGE_TABLE",
            "IDEMPOTENCY_TABLE",
        )
    }
    env.update(
        {"METERBRIDGE_ADMIN_TOKEN": "local-admin-token", "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    )
    log = (tmp_path / "dev.log").open("w+")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "meterbridge_dev.cli.main",
            "dev",
            "--port",
            str(port),
            "--flush-interval",
            "1",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180  # a cold start of the whole stack on a loaded machine
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health/live", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
        assert proc.poll() is None, (tmp_path / "dev.log").read_text()
    yield proc, base, tmp_path / "dev.log"
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_dev_serves_every_surface_and_stops_without_leftovers(dev_stack) -> None:
    proc, base, log_path = dev_stack
    # Given the stack is up
    # When readiness is asked
    ready = httpx.get(f"{base}/health/ready", timeout=10)
    # Then DynamoDB, NATS and OpenMeter are all up on their embedded stand-ins
    assert ready.status_code == 200, ready.text
    components = ready.json()["components"]
    assert {components[c]["status"] for c in ("dynamodb", "nats", "openmeter")} == {"up"}
    # And every surface answers on the one port (no admin route without auth)
    assert httpx.get(f"{base}/admin/tenants", timeout=5).status_code == 401
    assert httpx.post(f"{base}/v1/events", json={}, timeout=5).status_code == 401
    assert httpx.get(f"{base}/metrics", timeout=5).text.startswith("# HELP")
    webhook = httpx.post(f"{base}/stripe/webhook", content=b"{}", timeout=5)
    assert webhook.status_code == 400 and webhook.json()["error"]["code"]
    # And the embedded servers the stack printed are listening
    output = log_path.read_text()
    urls = re.findall(r"(?:DynamoDB|NATS)\s+(\S+://[\d.]+:\d+)", output)
    assert len(urls) == 2 and all(_listening(u) for u in urls), output
    # When it gets SIGTERM
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=30)
    # Then it exits cleanly and leaves no server behind
    assert code == 0, log_path.read_text()
    assert not any(_listening(u) for u in urls)
    assert "stopped." in log_path.read_text()
