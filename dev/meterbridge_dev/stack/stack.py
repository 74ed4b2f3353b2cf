"""The local stack: every part of meterbridge on one machine, with embedded stand-ins.

Each outside service is started here only when its variable does not already point
somewhere else, so a test (or an operator) can aim the stack at its own fakes or at real
services with no code change:

| Part      | Started here unless                       | Stand-in                             |
|-----------|-------------------------------------------|--------------------------------------|
| DynamoDB  | ``AWS_ENDPOINT_URL_DYNAMODB`` or          | a moto server, tables from           |
|           | ``AWS_ENDPOINT_URL`` is set               | template.yaml                        |
| NATS      | ``NATS_SERVERS`` is set                   | a real ``nats-server -js``           |
| OpenMeter | ``OPENMETER_BASE_URL`` is set             | an OpenMeter-compatible sink         |
| Stripe    | ``stripe="real"``                         | the Stripe stand-in (stripe_fake)    |

With ``stripe="real"`` the stack uses ``STRIPE_API_KEY``/``STRIPE_API_BASE`` as they are.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from meterbridge_dev.stack.processes import LOCAL_DYNAMODB_ENV, MotoServer, NatsServer

Say = Callable[[str], None]

DEFAULT_TABLES = {
    "TenantsTable": "meterbridge-tenants",
    "EventsTable": "meterbridge-events",
    "UsageTable": "meterbridge-usage",
    "IdempotencyTable": "meterbridge-idempotency",
}
TABLE_ENV = {
    "TenantsTable": "TENANTS_TABLE",
    "EventsTable": "EVENTS_TABLE",
    "UsageTable": "USAGE_TABLE",
    "IdempotencyTable": "IDEMPOTENCY_TABLE",
}


def table_names() -> dict[str, str]:
    """Logical table id -> name, from the environment or the local defaults."""
    return {lid: os.environ.get(TABLE_ENV[lid]) or DEFAULT_TABLES[lid] for lid in DEFAULT_TABLES}


def ensure_tables(names: dict[str, str] | None = None) -> list[str]:
    """Create the template's tables (missing ones only) at ``AWS_ENDPOINT_URL``."""
    from meterbridge.dal import dynamo
    from meterbridge_dev.stack.tables import create_tables

    names = names or table_names()
    existing = set(dynamo.client().list_tables().get("TableNames", []))
    missing = {lid: name for lid, name in names.items() if name not in existing}
    if missing:
        create_tables(dynamo.client(), missing)
    return sorted(missing.values())


@dataclass
class LocalStack:
    host: str = "127.0.0.1"
    flush_interval_s: float = 60.0
    say: Say = print
    stripe: str = "fake"
    # Event ids the embedded OpenMeter refuses with 400 (to see a dead letter).
    openmeter_reject: tuple[str, ...] = ()
    started: list[str] = field(default_factory=list)
    endpoints: dict[str, str] = field(default_factory=dict)
    _stripe_fake: Any = None
    _moto: MotoServer | None = None
    _nats: NatsServer | None = None
    _sink: Any = None
    _timer_stop: threading.Event = field(default_factory=threading.Event)
    _timer: threading.Thread | None = None

    def start(self) -> LocalStack:
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
        for var, value in LOCAL_DYNAMODB_ENV.items():
            os.environ.setdefault(var, value)
        try:
            self._start_dynamodb()
            self._start_nats()
            self._start_openmeter()
            self._check_stripe()
            self._refresh_settings()
        except BaseException:
            self.stop()
            raise
        return self

    # -- parts -----------------------------------------------------------------------------

    def _start_dynamodb(self) -> None:
        # boto3 prefers the service-specific variable, so either one names the DynamoDB to use.
        for var in ("AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL"):
            if os.environ.get(var):
                self.endpoints["dynamodb"] = os.environ[var]
                self.say(f"DynamoDB   {os.environ[var]} (from {var})")
                break
        else:
            moto = self._moto = MotoServer(self.host).start()
            os.environ["AWS_ENDPOINT_URL"] = moto.url
            self.endpoints["dynamodb"] = moto.url
            self.started.append("moto")
            self.say(f"DynamoDB   {moto.url} (embedded moto server)")
        for lid, name in table_names().items():
            os.environ[TABLE_ENV[lid]] = name
        from meterbridge.dal import dynamo
        from meterbridge.settings import get_settings

        get_settings.cache_clear()  # the client reads its timeouts from the settings
        dynamo.reset_clients()
        created = ensure_tables()
        self.say(
            f"           tables: {', '.join(table_names().values())}"
            + (f" ({len(created)} created from template.yaml)" if created else "")
        )

    def _start_nats(self) -> None:
        if os.environ.get("NATS_ENABLED", "true").lower() in ("0", "false", "no"):
            self.say("NATS       disabled (NATS_ENABLED=false): in-memory fallback bus")
            return
        os.environ["NATS_ENABLED"] = "true"
        if os.environ.get("NATS_SERVERS"):
            self.endpoints["nats"] = os.environ["NATS_SERVERS"]
            self.say(f"NATS       {os.environ['NATS_SERVERS']} (from NATS_SERVERS)")
            return
        try:
            nats = self._nats = NatsServer(self.host).start()
        except Exception as exc:  # noqa: BLE001 - the fallback bus keeps the stack usable
            os.environ["NATS_ENABLED"] = "false"
            self.say(f"NATS       could not start nats-server ({exc}); in-memory fallback bus")
            return
        os.environ["NATS_SERVERS"] = nats.url
        self.endpoints["nats"] = nats.url
        self.started.append("nats")
        self.say(f"NATS       {nats.url} (embedded nats-server -js, store {nats.store_dir})")

    def _start_openmeter(self) -> None:
        if os.environ.get("OPENMETER_BASE_URL"):
            self.endpoints["openmeter"] = os.environ["OPENMETER_BASE_URL"]
            self.say(f"OpenMeter  {os.environ['OPENMETER_BASE_URL']} (from OPENMETER_BASE_URL)")
            return
        from meterbridge_dev.fakes.openmeter_sink import SinkState, create_app
        from meterbridge_dev.stack.servers import BackgroundServer

        sink_state = SinkState()
        if self.openmeter_reject:
            sink_state.poison(*self.openmeter_reject)
        self._sink = BackgroundServer(create_app(sink_state), host=self.host)
        url = self._sink.start()
        os.environ["OPENMETER_BASE_URL"] = url
        os.environ.setdefault("OPENMETER_API_KEY", "om_local")
        self.endpoints["openmeter"] = url
        self.started.append("openmeter-sink")
        self.say(f"OpenMeter  {url} (embedded OpenMeter-compatible sink)")
        if self.openmeter_reject:
            self.say(f"           rejects event ids: {', '.join(self.openmeter_reject)} (400)")
        # The stand-in starts empty: give it the catalogue's meters, so history works.
        from meterbridge.adapters.openmeter_api import OpenMeterApi
        from meterbridge.logic.openmeter_meters import sync
        from meterbridge.plans import catalog
        from meterbridge.settings import get_settings

        get_settings.cache_clear()
        created = sync(catalog(), OpenMeterApi(get_settings())).create
        self.say(f"OpenMeter  {len(created)} meters synced from the catalogue")

    def _check_stripe(self) -> None:
        if not os.environ.get("STRIPE_WEBHOOK_SECRET"):
            import secrets

            # Unsigned or foreign webhooks get 400, as on AWS; choose the secret to sign your own.
            os.environ["STRIPE_WEBHOOK_SECRET"] = "whsec_local_" + secrets.token_hex(16)
            self.say(
                "Webhooks   STRIPE_WEBHOOK_SECRET not set: a random local secret is in use "
                "(`meterbridge stripe trigger` and `invoke` sign with it)"
            )
        if self.stripe != "real":
            from meterbridge_dev.fakes.stripe_fake import create_app as stripe_app
            from meterbridge_dev.stack.servers import BackgroundServer

            self._stripe_fake = BackgroundServer(stripe_app(), host=self.host)
            url = self._stripe_fake.start()
            os.environ["STRIPE_API_BASE"] = url
            os.environ["STRIPE_API_KEY"] = "sk_test_local"
            self.endpoints["stripe"] = url
            self.started.append("stripe-fake")
            # Provisioning finds prices by lookup key only: put the plans' prices in the
            # stand-in as `meterbridge stripe sync-catalog` does against Stripe.
            from meterbridge.settings import Settings
            from meterbridge_dev.stripe.catalog import sync_catalog

            sync_catalog(settings=Settings())
            self.say(f"Stripe     {url} (embedded Stripe stand-in; --stripe real for Stripe)")
        elif os.environ.get("STRIPE_API_KEY"):
            base = os.environ.get("STRIPE_API_BASE") or "Stripe's API"
            self.endpoints["stripe"] = base
            self.say(f"Stripe     {base} (from STRIPE_API_KEY/STRIPE_API_BASE)")
        else:
            self.say(
                "Stripe     WARNING: --stripe real but STRIPE_API_KEY is not set; tenants get no"
                " Stripe customer or subscription"
            )

    def connect_stripe_webhook(self, base_url: str) -> str | None:
        """Have the embedded Stripe stand-in deliver its events (test clocks' invoices among
        them) to ``base_url``'s ``/stripe/webhook``, signed with the first webhook secret."""
        if self._stripe_fake is None:
            return None
        url = base_url.rstrip("/") + "/stripe/webhook"
        secret = os.environ.get("STRIPE_WEBHOOK_SECRET", "").split(",")[0].strip()
        self._stripe_fake.app.state.stripe.set_webhook(url, secret)
        return url

    def _refresh_settings(self) -> None:
        from meterbridge.bus.publisher import reset_publisher
        from meterbridge.settings import get_settings

        get_settings.cache_clear()
        reset_publisher()

    # -- the scheduled flush -------------------------------------------------------------

    def start_flush_timer(self, on_result: Callable[[Any], None] | None = None) -> None:
        """Call the flush Lambda with a real scheduled event every ``flush_interval_s``."""
        from meterbridge_dev.stack.lambda_runtime import invoke, scheduled_event

        def loop() -> None:
            while not self._timer_stop.wait(self.flush_interval_s):
                try:
                    result = invoke("openmeter_flush", scheduled_event(), timeout_s=60.0)
                except Exception as exc:  # noqa: BLE001 - keep the timer alive, report it
                    result = {"error": f"{type(exc).__name__}: {exc}"}
                if isinstance(result, dict) and "error" not in result:
                    from meterbridge_streaming.metrics import observe_flush

                    observe_flush(result)
                if on_result:
                    on_result(result)

        self._timer = threading.Thread(target=loop, name="flush-timer", daemon=True)
        self._timer.start()
        self.say(f"Flush      every {self.flush_interval_s:g}s (EventBridge rate stand-in)")

    def stop(self) -> None:
        self._timer_stop.set()
        if self._timer is not None:
            self._timer.join(timeout=70)
        if self._sink is not None:
            self._sink.stop()
        if self._stripe_fake is not None:
            self._stripe_fake.stop()
        if self._nats is not None:
            self._nats.cleanup()
        if self._moto is not None:
            self._moto.stop()
