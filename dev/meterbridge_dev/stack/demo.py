"""``meterbridge dev --demo``: a demo tenant and steady synthetic traffic, so the dashboard moves.

``start_demo(base_url, say)`` returns at once with a stop function; a daemon thread waits for
the server at ``base_url`` to answer ``/health/live``, then:

1. provisions a demo tenant on the ``basic`` plan (the admin API over HTTP when
   ``METERBRIDGE_ADMIN_TOKEN`` is set, else the admin logic in this process) and prints its
   API key and the dashboard URL;
2. sends a small batch of usage events every ``interval_s`` through ``POST /v1/events``
   (mostly ``api.call`` and plain events, plus ``query`` events fast enough that the 80% and
   100% threshold alerts of the plan's 1,000 queries fire within a few minutes, then slowly,
   so the overage and the estimated charge keep moving);
3. every ``stripe_every_s`` posts an ``invoice.paid`` Stripe event for the tenant to
   ``/stripe/webhook``, signed with ``STRIPE_WEBHOOK_SECRET`` (a local one is set, in this
   process, when the variable is empty).

Everything goes through the public HTTP surfaces, the way a tenant and Stripe would use them.
"""

from __future__ import annotations

import os
import random
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from meterbridge.timestamps import rfc3339

Say = Callable[[str], None]

DEMO_PLAN = "basic"
DEMO_NAME = "Demo Analytics"
DEMO_EMAIL = "demo@example.com"
# Query events per second until the plan's query limit is passed, then after it.
QUERY_RAMP_PER_S = 6.0
QUERY_TAIL_PER_S = 0.5
SUBJECTS = ("customer-1", "customer-2", "customer-3", "customer-4", "customer-5")
ENDPOINTS = ("/v2/search", "/v2/items", "/v2/export", "/v2/graph")


@dataclass(frozen=True)
class DemoTenant:
    tenant_id: str
    api_key: str = field(repr=False)
    stripe_customer_id: str | None = None


def ensure_webhook_secret() -> str:
    """The first ``STRIPE_WEBHOOK_SECRET``; a random local one is set when there is none."""
    from meterbridge.settings import get_settings

    configured = get_settings().stripe_webhook_secret
    if configured:
        return configured[0]
    secret = "whsec_local_" + secrets.token_hex(16)
    os.environ["STRIPE_WEBHOOK_SECRET"] = secret
    # The webhook route of this process reads settings through the cache.
    get_settings.cache_clear()
    return secret


def provision_demo_tenant(client: httpx.Client) -> DemoTenant:
    """A new demo tenant and its first key (a new one per run: the secret is shown once)."""
    from meterbridge.settings import get_settings

    body = {"name": DEMO_NAME, "email": DEMO_EMAIL, "plan": DEMO_PLAN}
    idempotency_key = "demo-" + uuid.uuid4().hex
    token = get_settings().admin_token
    if token:
        resp = client.post(
            "/admin/tenants",
            json=body,
            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": idempotency_key},
        )
        resp.raise_for_status()
        result = resp.json()
        tenant, secret = result["tenant"], result["api_key"]["secret"]
        return DemoTenant(tenant["tenant_id"], secret, tenant.get("stripe_customer_id"))
    # No admin token: the admin logic itself, against this process's tables. Its
    # tenant.provisioned event stays in the outbox for the flush to publish: publishing from
    # this thread would leave a NATS connection behind on a short-lived event loop.
    from meterbridge.logic.tenants import provisioning
    from meterbridge.models.tenant import TenantCreate

    provisioned, _ = provisioning.provision_sync(TenantCreate(**body), idempotency_key)
    secret = getattr(provisioned.api_key, "secret", None)
    if not secret:
        raise RuntimeError("the demo tenant's key secret was not returned")
    return DemoTenant(provisioned.tenant.tenant_id, secret, provisioned.tenant.stripe_customer_id)


@dataclass
class UsageGenerator:
    """Synthetic usage: a few events per tick, query events ramping to the plan's limit."""

    run_id: str
    query_limit: int = 1000
    rng: random.Random = field(default_factory=random.Random)
    seq: int = 0
    queries: int = 0
    _query_credit: float = 0.0

    def batch(self, interval_s: float) -> list[dict[str, Any]]:
        now = rfc3339()
        events = []
        for _ in range(self.rng.randint(2, 8)):
            api_call = self.rng.random() < 0.6
            events.append(
                self._event(
                    "api.call" if api_call else "record.ingested",
                    {"endpoint": self.rng.choice(ENDPOINTS), "tokens": self.rng.randint(50, 900)}
                    if api_call
                    else {"bytes": self.rng.randint(200, 20_000)},
                    now,
                )
            )
        rate = QUERY_RAMP_PER_S if self.queries < self.query_limit else QUERY_TAIL_PER_S
        self._query_credit += rate * interval_s
        while self._query_credit >= 1:
            self._query_credit -= 1
            self.queries += 1
            events.append(
                self._event("query", {"kind": "rca", "ms": self.rng.randint(5, 400)}, now)
            )
        return events

    def _event(self, event_type: str, data: dict[str, Any], now: str) -> dict[str, Any]:
        self.seq += 1
        return {
            "specversion": "1.0",
            "id": f"demo-{self.run_id}-{self.seq}",
            "type": event_type,
            "time": now,
            "subject": self.rng.choice(SUBJECTS),
            "data": data,
        }


def invoice_paid_event(tenant: DemoTenant, number: int) -> dict[str, Any]:
    """A Stripe ``invoice.paid`` event for the tenant (API version 2025+ field layout)."""
    created = int(time.time())
    metadata = {"tenant_id": tenant.tenant_id}
    return {
        "id": f"evt_demo{secrets.token_hex(8)}",
        "object": "event",
        "type": "invoice.paid",
        "created": created,
        "livemode": False,
        "data": {
            "object": {
                "id": f"in_demo{secrets.token_hex(8)}",
                "object": "invoice",
                "customer": tenant.stripe_customer_id,
                "amount_paid": 9900,
                "currency": "usd",
                "status": "paid",
                "attempt_count": 1,
                "billing_reason": "subscription_cycle",
                "number": f"DEMO-{number:04d}",
                "metadata": metadata,
                "parent": {"subscription_details": {"subscription": None, "metadata": metadata}},
                "lines": {
                    "data": [
                        {"pricing": {"price_details": {"price": "price_meterbridge_basic_monthly"}}}
                    ]
                },
            }
        },
    }


class _DemoLoop:
    def __init__(
        self, base_url: str, say: Say, interval_s: float, stripe_every_s: float, ready_s: float
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.say = say
        self.interval_s = interval_s
        self.stripe_every_s = stripe_every_s
        self.ready_s = ready_s
        self.stop_event = threading.Event()
        self.tenant: DemoTenant | None = None
        self.secret = ensure_webhook_secret()
        self.thread = threading.Thread(target=self._run, name="meterbridge-demo", daemon=True)
        self._last_error = 0.0

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=10.0) as client:
            if not self._wait_ready(client):
                return
            try:
                self.tenant = provision_demo_tenant(client)
            except Exception as exc:  # noqa: BLE001 - the demo is optional: report and stop
                self.say(f"demo       could not provision the demo tenant: {exc}")
                return
            self.say(f"demo       tenant {self.tenant.tenant_id} on the {DEMO_PLAN} plan")
            self.say(f"demo       API key {self.tenant.api_key}")
            self.say(f"demo       dashboard {self.base_url}/  (sign in with the key above)")
            self._loop(client, self.tenant)

    def _wait_ready(self, client: httpx.Client) -> bool:
        deadline = time.monotonic() + self.ready_s
        while not self.stop_event.is_set():
            try:
                if client.get("/health/live").status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.say(f"demo       {self.base_url} did not come up; no demo traffic")
                return False
            self.stop_event.wait(0.2)
        return False

    def _loop(self, client: httpx.Client, tenant: DemoTenant) -> None:
        from meterbridge.plans import catalog
        from meterbridge_dev.fakes.stripe_fake import webhook_request

        limit = int(catalog().plan(DEMO_PLAN).limit("queries") or 1000)
        usage = UsageGenerator(run_id=uuid.uuid4().hex[:8], query_limit=limit)
        auth = {"Authorization": f"Bearer {tenant.api_key}"}
        next_stripe = time.monotonic() + min(self.stripe_every_s, 15.0)
        invoices = 0
        while not self.stop_event.wait(self.interval_s):
            try:
                resp = client.post("/v1/events", json=usage.batch(self.interval_s), headers=auth)
                if resp.status_code >= 400:
                    self._report(f"usage API answered {resp.status_code}: {resp.text[:200]}")
                if time.monotonic() >= next_stripe:
                    invoices += 1
                    body, headers = webhook_request(
                        invoice_paid_event(tenant, invoices), self.secret
                    )
                    hook = client.post("/stripe/webhook", content=body, headers=headers)
                    if hook.status_code >= 400:
                        self._report(f"webhook answered {hook.status_code}: {hook.text[:200]}")
                    next_stripe = time.monotonic() + self.stripe_every_s
            except httpx.HTTPError as exc:
                self._report(f"request failed: {type(exc).__name__}")

    def _report(self, message: str) -> None:
        # One line per 10 s at most: a stopped server must not flood the console.
        if time.monotonic() - self._last_error > 10:
            self._last_error = time.monotonic()
            self.say(f"demo       {message}")

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout=15)


def start_demo(
    base_url: str,
    say: Say,
    *,
    interval_s: float = 0.5,
    stripe_every_s: float = 45.0,
    ready_timeout_s: float = 60.0,
) -> Callable[[], None]:
    """Start the demo against the server at ``base_url``; returns a function that stops it.

    Returns at once (the thread waits for ``/health/live``), so it can be called just before
    the server starts serving.
    """
    loop = _DemoLoop(base_url, say, interval_s, stripe_every_s, ready_timeout_s)
    loop.thread.start()
    return loop.stop
