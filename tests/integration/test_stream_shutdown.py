"""SIGTERM drains: the ECS entry point in its own process, as the task runs it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import nats

from meterbridge_dev.stack.processes import free_port, wait_for_port
from tests.support.builders import make_tenant
from tests.support.streams import SSEReader, auth, js_publish, usage_event

ROOT = Path(__file__).resolve().parents[2]


async def test_sigterm_tells_clients_drains_and_exits(
    aws: dict[str, str], nats_server: Any
) -> None:
    # Given the streaming entry point serving a connected client that received an event
    tenant, key = make_tenant()
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "PYTHONPATH": "shared:services/streaming:.",
        "METERBRIDGE_ADMIN_TOKEN": "ops-token",
    }
    proc = subprocess.Popen(
        [sys.executable, "services/streaming/app.py"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port("127.0.0.1", port, timeout=30, proc=proc)
        nc = await nats.connect(nats_server.url)
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(timeout=60) as http:
            while (await http.get(f"{base}/health/ready")).json()["components"]["stream_bridge"][
                "status"
            ] != "up":
                pass
            async with SSEReader(http, f"{base}/v1/stream", auth(key)) as reader:
                for _ in range(400):
                    if (await http.get(f"{base}/status", headers=auth("ops-token"))).json()[
                        "clients"
                    ] == 1:
                        break
                    await asyncio.sleep(0.05)
                seq = await js_publish(nc.jetstream(), tenant, usage_event(tenant, 1))
                first = await reader.next_event()

                # When ECS sends SIGTERM
                proc.send_signal(signal.SIGTERM)
                final = await reader.next_event()
                end = await reader.next_event()
        await nc.close()
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = proc.stdout.read().decode() if proc.stdout else ""

    # Then the client got its event, then a final shutdown event asking it to reconnect,
    # then the end of the stream; the process drained NATS and exited cleanly in time
    assert first is not None and first.id == str(seq)
    assert final is not None and final.event == "shutdown" and final.id is None
    assert final.json == {"reason": "shutdown", "reconnect": True}
    assert reader.retry == 1000
    assert end is None
    assert code == 0, output[-2000:]
