"""The live usage dashboard in headless Chromium, against the whole stack on loopback.

The app is composed here (the dev app plus ``include_dashboard``), served by uvicorn on a real
socket, with DynamoDB on the moto server and a real ``nats-server -js``. Events go in through
the usage API over HTTP, as a tenant's backend would send them. Screenshots at 375 px and
1440 px land in ``test-artifacts/`` (gitignored; CI keeps them as artifacts).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from playwright.sync_api import Browser, Page, expect, sync_playwright

from meterbridge.api import usage
from meterbridge.api.errors import install_error_handlers
from meterbridge_dev.stack.devapp import create_dev_app
from meterbridge_dev.stack.servers import BackgroundServer
from meterbridge_streaming.dashboard.routes import include_dashboard
from tests.support.builders import make_tenant

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# The promise: a sent event shows in the numbers and the chart within 2 seconds.
LIVE_MS = 2000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def stack(aws: dict[str, str], nats_server: Any) -> Iterator[str]:
    """The dev app (usage, admin, webhook, streaming) with the dashboard, on loopback."""
    app = create_dev_app()
    include_dashboard(app)
    with BackgroundServer(app, graceful_timeout=2.0) as server:
        yield server.url


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    yield page
    context.close()


def send(base: str, key: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    resp = httpx.post(
        f"{base}/v1/events", json=events, headers={"Authorization": f"Bearer {key}"}, timeout=10
    )
    assert resp.status_code == 202, resp.text
    return resp.json()


def events_of(event_type: str, n: int) -> list[dict[str, Any]]:
    run = uuid.uuid4().hex[:8]
    return [
        {
            "id": f"e2e-{run}-{i}",
            "type": event_type,
            "subject": f"customer-{i % 3}",
            "data": {"endpoint": "/v2/search"},
        }
        for i in range(n)
    ]


def sign_in(page: Page, base: str, key: str) -> None:
    page.goto(base + "/")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()


def shoot(page: Page, name: str, width: int) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    page.set_viewport_size({"width": width, "height": 1000})
    page.wait_for_timeout(300)  # let the canvas redraw at the new size (a ResizeObserver tick)
    path = ARTIFACTS / f"{name}-{width}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def test_signed_in_tenant_sees_usage_and_chart_move_live(stack: str, page: Page) -> None:
    # Given a tenant on the free plan, signed in on the dashboard, with the stream live
    tenant_id, key = make_tenant(plan="free", name="Acme Analytics")
    sign_in(page, stack, key)
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    api_calls = page.locator('[data-meter="api_calls"]')
    expect(api_calls).to_have_attribute("data-used", "0")
    expect(page.locator("#plan-name")).to_have_text("Free")
    chart = page.locator("#rate-chart")
    chart_before = chart.evaluate("c => c.toDataURL()")
    # And the key is not kept anywhere but the page's memory
    assert page.locator("#api-key").input_value() == ""
    assert page.evaluate("() => localStorage.length + sessionStorage.length") == 0

    # When the tenant's backend sends 7 API calls through the usage API
    sent = events_of("api.call", 7)
    assert send(stack, key, sent) == {"accepted": 7, "duplicates": 0}

    # Then within 2 seconds the meter shows them, the chart counts them, the events are listed
    expect(api_calls).to_have_attribute("data-used", "7", timeout=LIVE_MS)
    expect(chart).to_have_attribute("data-last-minute", "7", timeout=LIVE_MS)
    expect(page.locator("#events-body")).to_contain_text(sent[-1]["id"], timeout=LIVE_MS)
    assert chart.evaluate("c => c.toDataURL()") != chart_before
    expect(api_calls.locator(".used")).to_have_text("7 calls")

    # When query events cross 80% of the plan's 100 queries
    send(stack, key, events_of("query", 85))
    # Then the threshold alert fires on the page, in an assertive live region
    alert = page.locator("#alerts .alert").first
    expect(alert).to_contain_text("80%", timeout=LIVE_MS)
    expect(page.locator("#alerts")).to_have_attribute("aria-live", "assertive")
    expect(page.locator('[data-meter="queries"]')).to_have_attribute("data-level", "warn")

    # And both widths render for the record (and the phone layout has no sideways scroll)
    shoot(page, "dashboard", 1440)
    shoot(page, "dashboard", 375)
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 375
    assert (
        tenant_id
        in httpx.get(
            f"{stack}/v1/usage", headers={"Authorization": f"Bearer {key}"}, timeout=10
        ).text
    )


def test_wrong_key_shows_a_clear_message(stack: str, page: Page) -> None:
    # Given the sign-in page
    page.goto(stack + "/")
    # When a key that does not exist is entered (well formed, so the server decides)
    make_tenant(plan="free")
    sign_in(page, stack, "mb_test_" + "A" * 40)
    # Then the page says so clearly, stays on the sign-in form and marks the field invalid
    error = page.locator("#signin-error")
    expect(error).to_contain_text("not recognised")
    expect(error).to_have_attribute("role", "alert")
    expect(page.locator("#dashboard")).to_be_hidden()
    expect(page.get_by_label("API key")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("API key")).to_be_focused()
    shoot(page, "wrong-key", 375)


def test_keyboard_only_sign_in_and_sign_out(stack: str, page: Page) -> None:
    # Given a tenant and the sign-in page, with focus in the key field
    _, key = make_tenant(plan="basic")
    page.goto(stack + "/")
    expect(page.get_by_label("API key")).to_be_focused()
    # When the key is typed and Enter pressed
    page.keyboard.type(key)
    page.keyboard.press("Enter")
    # Then the dashboard shows, live
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    expect(page.locator("#plan-name")).to_have_text("Basic")
    # When Sign out is reached with Tab and pressed
    sign_out = page.get_by_role("button", name="Sign out")
    for _ in range(10):
        page.keyboard.press("Tab")
        if sign_out.evaluate("b => b === document.activeElement"):
            break
    page.keyboard.press("Enter")
    # Then the key is gone with the session: the form is back and empty
    expect(page.locator("#signin")).to_be_visible()
    expect(page.locator("#connection")).to_have_attribute("data-state", "signed-out")
    assert page.get_by_label("API key").input_value() == ""


@pytest.fixture
def usage_only(aws: dict[str, str]) -> Iterator[str]:
    """A server with the usage API and the dashboard but no streaming service."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        yield

    app = FastAPI(lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(usage.router)
    include_dashboard(app)
    with BackgroundServer(app) as server:
        yield server.url


def test_without_streaming_the_page_falls_back_to_polling(usage_only: str, page: Page) -> None:
    # Given a server without /v1/stream-tokens, and a signed-in tenant
    _, key = make_tenant(plan="basic")
    sign_in(page, usage_only, key)
    # Then the page says it is in fallback (polling), not live
    expect(page.locator("#connection")).to_have_attribute("data-state", "fallback")
    expect(page.locator("#connection-text")).to_contain_text("polling")
    events = page.locator('[data-meter="events"]')
    expect(events).to_have_attribute("data-used", "0")
    # When events are sent
    send(usage_only, key, events_of("record.ingested", 4))
    # Then the numbers and the chart still move within 2 seconds (one poll per second)
    expect(events).to_have_attribute("data-used", "4", timeout=LIVE_MS)
    expect(page.locator("#rate-chart")).to_have_attribute("data-last-minute", "4", timeout=LIVE_MS)
    shoot(page, "fallback", 1440)


def test_dashboard_assets_are_served_from_the_package(stack: str) -> None:
    # Given the stack with the dashboard
    # When the page and its assets are fetched
    page = httpx.get(stack + "/", timeout=5)
    script = httpx.get(stack + "/static/app.js", timeout=5)
    style = httpx.get(stack + "/static/app.css", timeout=5)
    missing = httpx.get(stack + "/static/../routes.py", timeout=5)
    other = httpx.get(stack + "/static/routes.py", timeout=5)
    # Then they come with their types, a strict CSP and no referrer (the token is in a URL)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["referrer-policy"] == "no-referrer"
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")
    # And nothing else of the package is reachable
    assert missing.status_code == 404 and other.status_code == 404
    assert other.json()["error"]["code"] == "not_found"


@pytest.fixture
def stack_with_openmeter(
    aws: dict[str, str], nats_server: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """The dev app and dashboard with the OpenMeter stand-in, its meters synced."""
    from meterbridge.adapters.openmeter_api import OpenMeterApi
    from meterbridge.logic.openmeter_meters import sync
    from meterbridge.plans import catalog
    from meterbridge.settings import get_settings
    from meterbridge_dev.fakes.openmeter_sink import create_app as sink_app
    from tests.support.fixtures import reset_singletons

    with BackgroundServer(sink_app()) as sink:
        monkeypatch.setenv("OPENMETER_ENABLED", "true")
        monkeypatch.setenv("OPENMETER_BASE_URL", sink.url)
        reset_singletons()
        sync(catalog(), OpenMeterApi(get_settings()))
        app = create_dev_app()
        include_dashboard(app)
        with BackgroundServer(app, graceful_timeout=2.0) as server:
            yield server.url


def test_meters_show_their_units_days_and_top_groups(stack_with_openmeter: str, page: Page) -> None:
    from meterbridge.logic import flush

    # Given a Pro tenant whose backend sent LLM completions by model and a storage reading,
    # delivered to OpenMeter by the flush
    _, key = make_tenant(plan="pro", name="Tokens Inc")
    sizes = [(1200, "gpt-small"), (300, "gpt-large"), (500, "gpt-small")]
    completions = [
        {
            "id": f"c{i}",
            "type": "llm.completion",
            "subject": "end-user-1",
            "data": {"tokens": n, "model": model, "user_id": f"u{i % 2}"},
        }
        for i, (n, model) in enumerate(sizes)
    ]
    send(stack_with_openmeter, key, completions)
    send(stack_with_openmeter, key, [{"id": "s1", "type": "storage.reported", "data": {"gb": 3.5}}])
    assert flush.flush_outbox(None).remaining == 0
    # When the tenant signs in
    sign_in(page, stack_with_openmeter, key)
    # Then each meter shows its own unit
    tokens = page.locator('[data-meter="tokens"]')
    expect(tokens.locator(".used")).to_have_text("2,000 tokens")
    expect(page.locator('[data-meter="storage_gb"] .used')).to_have_text("3.5 GB")
    expect(page.locator('[data-meter="active_users"] .used')).to_have_text("2 users")
    # And the top groups of the grouped meter, largest first
    groups = tokens.locator(".meter-groups li")
    expect(groups).to_have_count(2)
    expect(groups.nth(0)).to_have_attribute("data-group", "gpt-small")
    expect(groups.nth(0)).to_contain_text("1,700")
    # And the period so far by day, from the history query
    day = tokens.locator(".meter-days .day")
    expect(day).to_have_count(1)
    expect(day).to_have_attribute("data-value", "2000")
    shoot(page, "dashboard-meters", 1440)


def test_without_openmeter_the_daily_chart_says_history_is_unavailable(
    stack: str, page: Page
) -> None:
    _, key = make_tenant(plan="pro")
    send(
        stack, key, [{"id": "c1", "type": "llm.completion", "data": {"tokens": 5, "user_id": "u"}}]
    )
    sign_in(page, stack, key)
    box = page.locator('[data-meter="tokens"] .meter-days')
    expect(box).to_have_attribute("data-state", "unavailable")
    expect(page.locator('[data-meter="tokens"] .used')).to_have_text("5 tokens")


@pytest.fixture
def small_basic_stack(
    aws: dict[str, str], nats_server: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[str]:
    """The dashboard stack with Basic's limits cut to 5 API calls and 3 queries, and API calls
    priced per call ($0.10 each), so a handful of events makes two overage lines."""
    import json

    from meterbridge.plans import PLANS_FILE_DEFAULT
    from tests.support.fixtures import reset_singletons

    raw = json.loads(PLANS_FILE_DEFAULT.read_text())
    basic = raw["plans"]["basic"]
    basic["limits"].update({"api_calls": 5, "queries": 3})
    basic["overage"]["api_calls"] = {"per_units": 1, "price_cents": 10}
    path = tmp_path / "plans.json"
    path.write_text(json.dumps(raw))
    monkeypatch.setenv("METERBRIDGE_PLANS_FILE", str(path))
    reset_singletons()
    app = create_dev_app()
    include_dashboard(app)
    with BackgroundServer(app, graceful_timeout=2.0) as server:
        yield server.url


def test_next_invoice_shows_base_price_one_line_per_meter_and_total(
    small_basic_stack: str, page: Page
) -> None:
    # Given a Basic tenant signed in, with nothing over its limits yet
    base = small_basic_stack
    _, key = make_tenant(plan="basic", name="Acme Analytics")
    sign_in(page, base, key)
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    invoice = page.get_by_role("table").filter(has=page.locator("#invoice-total"))
    expect(page.get_by_role("heading", name="Next invoice")).to_be_visible()
    expect(invoice.locator('[data-line="base"]')).to_have_attribute("data-cents", "9900")
    expect(invoice.locator("tr[data-meter]")).to_have_count(0)
    expect(page.locator("#invoice-total")).to_have_attribute("data-cents", "9900")

    # When it goes 3 API calls and 2 queries over its limits
    send(base, key, events_of("api.call", 8))
    send(base, key, events_of("query", 5))

    # Then the card shows one line per meter with overage, as GET /v1/usage prices them
    api_line = invoice.locator('tr[data-meter="api_calls"]')
    query_line = invoice.locator('tr[data-meter="queries"]')
    expect(api_line).to_have_attribute("data-cents", "30", timeout=LIVE_MS * 5)
    expect(query_line).to_have_attribute("data-cents", "100", timeout=LIVE_MS * 5)
    expect(page.locator("#invoice-total")).to_have_attribute("data-cents", "10030")
    expect(page.locator("#invoice-total")).to_have_text("$100.30")
    report = httpx.get(
        f"{base}/v1/usage", headers={"Authorization": f"Bearer {key}"}, timeout=10
    ).json()
    nxt = report["current"]["next_invoice"]
    assert nxt["total_cents"] == 10030 and nxt["base_price_cents"] == 9900
    lines = {line["meter"]: line for line in nxt["lines"]}
    assert {m: line["amount_cents"] for m, line in lines.items()} == {
        "api_calls": 30,
        "queries": 100,
    }
    expect(api_line).to_contain_text(lines["api_calls"]["description"])
    expect(api_line).to_contain_text("$0.30")
    expect(query_line).to_contain_text(lines["queries"]["description"])
    expect(invoice.locator('[data-line="base"]')).to_contain_text("Basic base price")
    shoot(page, "dashboard-next-invoice", 1440)
    shoot(page, "dashboard-next-invoice", 375)
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 375
