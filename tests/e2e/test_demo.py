"""``meterbridge dev --demo``'s engine: a demo tenant, steady usage, signed Stripe events."""

from __future__ import annotations

import queue
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from meterbridge_dev.stack.demo import start_demo
from meterbridge_dev.stack.devapp import create_dev_app
from meterbridge_dev.stack.servers import BackgroundServer
from meterbridge_streaming.dashboard.routes import include_dashboard

# Bounds for waiting on the demo thread (not assertions on speed).
WAIT_S = 120.0


@pytest.fixture
def stack(aws: dict[str, str], nats_server: Any) -> Iterator[str]:
    app = create_dev_app()
    include_dashboard(app)
    with BackgroundServer(app, graceful_timeout=2.0) as server:
        yield server.url


def _line(lines: queue.Queue[str], pattern: str) -> re.Match[str]:
    deadline = time.monotonic() + WAIT_S
    seen = []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        seen.append(line)
        match = re.search(pattern, line)
        if match:
            return match
    raise AssertionError(f"no line matching {pattern!r} in {seen}")


def _stream_until(base: str, key: str, event_type: str) -> dict[str, str]:
    """Read the tenant's SSE stream (from the start) until an event of ``event_type``."""
    headers = {"Authorization": f"Bearer {key}", "Last-Event-ID": "0"}
    deadline = time.monotonic() + WAIT_S
    with httpx.stream("GET", f"{base}/v1/stream", headers=headers, timeout=WAIT_S) as resp:
        assert resp.status_code == 200
        frame: dict[str, str] = {}
        for line in resp.iter_lines():
            if line == "":
                if frame.get("event") == event_type:
                    return frame
                frame = {}
            elif ":" in line and not line.startswith(":"):
                field, _, value = line.partition(":")
                frame[field] = value.strip()
            if time.monotonic() > deadline:
                break
    raise AssertionError(f"no {event_type} event on the stream")


@pytest.mark.parametrize("admin_token", ["", "local-admin-token"], ids=["logic", "admin-api"])
def test_demo_provisions_a_tenant_and_keeps_usage_and_billing_moving(
    stack: str, admin_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the stack, no webhook secret configured, with or without an admin token
    from meterbridge.settings import get_settings

    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "")
    monkeypatch.setenv("METERBRIDGE_ADMIN_TOKEN", admin_token)
    get_settings.cache_clear()
    lines: queue.Queue[str] = queue.Queue()

    # When the demo starts
    stop = start_demo(stack, lines.put, interval_s=0.1, stripe_every_s=0.5)
    try:
        # Then it prints the tenant, its key and the dashboard URL
        tenant_id = _line(lines, r"tenant (t_[0-9a-f]{16})").group(1)
        key = _line(lines, r"API key (mb_test_\S+)").group(1)
        assert _line(lines, r"dashboard (\S+)").group(1) == f"{stack}/"
        # And a local webhook secret was set for this process
        assert get_settings().stripe_webhook_secret[0].startswith("whsec_local_")
        # And the key reads usage that keeps growing
        auth = {"Authorization": f"Bearer {key}"}
        totals = []
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline and (len(totals) < 2 or totals[-1] <= totals[0]):
            report = httpx.get(f"{stack}/v1/usage", headers=auth, timeout=10).json()
            assert report["tenant_id"] == tenant_id
            totals.append(sum(m["used"] for m in report["current"]["meters"]))
            time.sleep(0.3)
        assert totals[-1] > totals[0], totals
        # And a signed Stripe invoice.paid reached the tenant's stream as payment.success
        frame = _stream_until(stack, key, "payment.success")
        assert tenant_id in frame["data"]
    finally:
        stop()
    # And nothing went wrong on the way (a refused request would have been reported)
    reported = []
    while not lines.empty():
        reported.append(lines.get())
    assert not [line for line in reported if "answered" in line or "failed" in line], reported
