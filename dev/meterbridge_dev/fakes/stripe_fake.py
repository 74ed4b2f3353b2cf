"""A fake Stripe HTTP API on loopback, good enough for the real ``stripe`` client (16.x).

Point the client at it with ``stripe.StripeClient(key, base_addresses={"api": url})`` (or the
global ``stripe.api_base = url``). Requests are form-encoded exactly as the client sends them
(``items[0][price]``, ``metadata[tenant_id]``); answers are Stripe-shaped JSON objects
(``cus_…``, ``sub_…``, ``si_…``, ``price_…``, ``evt_…`` ids, ``object``, ``created``,
``livemode: false``), errors are ``{"error": {"type", "message", "code"?, "param"?}}``.

Endpoints: ``POST/GET /v1/customers``, ``GET/POST/DELETE /v1/customers/{id}``,
``POST/GET /v1/prices``, ``GET /v1/prices/{id}``, ``POST/GET /v1/subscriptions``,
``GET/POST/DELETE /v1/subscriptions/{id}``, ``GET /v1/events`` (``created[gt|gte|lt|lte]``,
``type`` with ``*`` wildcards, ``types[]``, ``limit``, ``starting_after``, ``ending_before``;
newest first, as Stripe lists), ``GET /v1/events/{id}``. Every mutation appends a Stripe
Event (``customer.created``, ``customer.updated``, ``customer.deleted``, ``price.created``,
``customer.subscription.created|updated|deleted``) holding a snapshot in ``data.object``;
``StripeState.add_event`` adds arbitrary ones (``invoice.paid`` ...). Unknown price ids are
accepted and synthesised (monthly, USD) unless ``strict_prices`` is set.

Auth: ``Authorization: Bearer sk_…`` (or ``rk_…``); when ``api_key`` is configured it must
match exactly. Otherwise 401 with a Stripe error body.

Idempotency (as Stripe): every ``Idempotency-Key`` seen is recorded as ``(method, path, key)``.
A successful POST's response is stored under its key; the same key on the same endpoint with
the same parameters replays it (header ``Idempotent-Replayed: true``) without acting again; the
same key with other parameters or another endpoint is a 400 ``idempotency_error``. Error
responses are not stored, so a retry after a failure acts again.

Faults (``StripeState.inject_fault`` or ``POST /_control/faults``): the next ``count`` calls
whose method matches (``"*"`` for any) and whose path starts with ``path_prefix`` fail with
``status`` (500 ``api_error`` by default; 402 ``card_error``, 400 ``invalid_request_error``,
or any type/message/code). With ``after_action`` the call is performed (and its result stored
under the idempotency key) before the error is answered: the lost-response case, where a retry
with the same key gets the stored success. ``should_retry`` sets ``Stripe-Should-Retry``.

Retries: the global ``stripe`` module retries 5xx/409 twice by default
(``stripe.max_network_retries = 2``) and ``StripeClient`` retries ``max_network_retries`` times
(``None`` means 0 in 16.x), re-sending the same Idempotency-Key. A retried injected fault is
consumed by the first attempt and hidden by the retry, so tests that want to see a fault
should use ``max_network_retries=0`` (or inject ``count`` > retries, or ``should_retry=False``).

Control endpoints (JSON): ``POST /_control/faults`` ``{"clear"?: bool, "faults": [{"method",
"path_prefix", "status"?, "count"?, "after_action"?, "type"?, "message"?, "code"?,
"should_retry"?}]}`` (a single fault object is accepted too) and ``GET /_control/faults``;
``POST /_control/events`` ``{"type", "object", "previous_attributes"?, "created"?}`` → the
event; ``GET /_control/state``; ``GET /_control/idempotency_keys``; ``GET /_control/requests``;
``POST /_control/reset``; ``GET /health``.

Webhooks: ``sign_payload`` makes a ``Stripe-Signature`` header with Stripe's scheme
(``t=<ts>,v1=<hex HMAC-SHA256 of "<ts>.<payload>">``); ``webhook_request`` gives body and
headers for posting an event to a webhook endpoint.

Run as a process: ``python -m meterbridge_dev.fakes.stripe_fake --port P [--api-key K]``.
"""

from __future__ import annotations

import argparse
import copy
import fnmatch
import hashlib
import hmac
import json
import random
import re
import string
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any
from urllib.parse import parse_qsl

import stripe
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

# The API version the installed client pins (its public ``stripe.api_version``, read at import
# before anything can set it); events carry it when a request names none.
DEFAULT_API_VERSION: str = stripe.api_version

_ID_ALPHABET = string.ascii_letters + string.digits
_DEFAULT_ERROR_TYPE = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    402: "card_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    409: "idempotency_error",
    429: "invalid_request_error",
}
_PRORATION_BEHAVIORS = ("create_prorations", "none", "always_invoice")
_SUBSCRIPTION_EVENT_FIELDS = ("items", "metadata", "cancel_at_period_end", "status")


class StripeError(Exception):
    """An error answered in Stripe's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or _DEFAULT_ERROR_TYPE.get(status, "api_error")
        self.code = code
        self.param = param

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.code:
            error["code"] = self.code
        if self.param:
            error["param"] = self.param
        return {"error": error}


def _missing(kind: str, object_id: str, param: str = "id") -> StripeError:
    return StripeError(404, f"No such {kind}: '{object_id}'", code="resource_missing", param=param)


@dataclass
class Fault:
    """Fail the next ``count`` calls matching ``method`` (or ``"*"``) and ``path_prefix``."""

    method: str = "*"
    path_prefix: str = "/v1/"
    status: int = 500
    count: int = 1
    after_action: bool = False
    type: str | None = None
    message: str | None = None
    code: str | None = None
    should_retry: bool | None = None

    def __post_init__(self) -> None:
        self.method = self.method.upper()
        if self.status < 400:
            raise ValueError("a fault's status must be 4xx or 5xx")
        if self.count < 1:
            raise ValueError("a fault's count must be at least 1")
        if self.code is None and self.status == 402:
            self.code = "card_declined"
        if self.code is None and self.status == 429:
            self.code = "rate_limit"

    @classmethod
    def parse(cls, spec: Fault | dict[str, Any]) -> Fault:
        if isinstance(spec, Fault):
            return spec
        fields = set(cls.__dataclass_fields__)
        unknown = set(spec) - fields
        if unknown:
            raise ValueError(f"unknown fault fields {sorted(unknown)}")
        return cls(**spec)

    def matches(self, method: str, path: str) -> bool:
        return self.method in ("*", method.upper()) and path.startswith(self.path_prefix)

    def error(self) -> StripeError:
        message = self.message or (
            "An unknown error occurred (injected fault)"
            if self.status >= 500
            else f"Injected fault ({self.status})"
        )
        return StripeError(self.status, message, type=self.type, code=self.code)


# -- form decoding -------------------------------------------------------------------------


def decode_form(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's bracketed form keys to nested values: ``items[0][price]=p`` →
    ``{"items": [{"price": "p"}]}``, ``expand[]=a`` → ``{"expand": ["a"]}``."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        head, _, rest = key.partition("[")
        parts = [head] + (re.findall(r"([^\[\]]*)\]", "[" + rest) if rest else [])
        node = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if part == "":  # "a[]": append
                part = str(sum(1 for k in node if k.isdigit()))
            if last:
                node[part] = value
            else:
                child = node.get(part)
                if not isinstance(child, dict):
                    child = {}
                    node[part] = child
                node = child
    return _listify(root)


def _listify(value: Any) -> Any:
    if isinstance(value, dict):
        converted = {k: _listify(v) for k, v in value.items()}
        if converted and all(k.isdigit() for k in converted):
            return [converted[k] for k in sorted(converted, key=int)]
        return converted
    return value


def _bool(value: Any, param: str) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "True", "1"):
        return True
    if value in ("false", "False", "0", ""):
        return False
    raise StripeError(
        400, f"Invalid boolean: {value}", code="parameter_invalid_boolean", param=param
    )


def _int(value: Any, param: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise StripeError(
            400, f"Invalid integer: {value}", code="parameter_invalid_integer", param=param
        ) from None


def _merge_metadata(current: dict[str, str], update: Any) -> dict[str, str]:
    """Stripe's metadata update: keys merge, ``""`` deletes a key, ``metadata=""`` clears all."""
    if update is None:
        return current
    if update == "":
        return {}
    if not isinstance(update, dict):
        raise StripeError(400, "Invalid metadata: must be an object", param="metadata")
    merged = dict(current)
    for key, value in update.items():
        if value == "":
            merged.pop(key, None)
        else:
            merged[key] = str(value)
    return merged


def _add_months(timestamp: int, months: int) -> int:
    """``timestamp`` plus calendar months (day clamped to the month's end), in UTC."""
    import calendar
    from datetime import UTC, datetime

    dt = datetime.fromtimestamp(timestamp, UTC)
    month0 = dt.month - 1 + months
    year, month = dt.year + month0 // 12, month0 % 12 + 1
    day = min(dt.day, calendar.monthrange(year, month)[1])
    return int(dt.replace(year=year, month=month, day=day).timestamp())


def _anchor_after(now: int, config: dict[str, Any]) -> int:
    """The first instant after ``now`` matching ``billing_cycle_anchor_config`` (UTC), as
    Stripe computes it: day_of_month (clamped to the month's end), hour, minute, second."""
    import calendar
    from datetime import UTC, datetime

    day = _int(config.get("day_of_month"), "billing_cycle_anchor_config[day_of_month]")
    if not 1 <= day <= 31:
        raise StripeError(
            400, "Invalid day_of_month", param="billing_cycle_anchor_config[day_of_month]"
        )
    hms = [
        _int(config.get(f, 0), f"billing_cycle_anchor_config[{f}]")
        for f in ("hour", "minute", "second")
    ]
    dt = datetime.fromtimestamp(now, UTC)
    year, month = dt.year, dt.month
    for _ in range(3):
        last = calendar.monthrange(year, month)[1]
        candidate = datetime(year, month, min(day, last), hms[0], hms[1], hms[2], tzinfo=UTC)
        if candidate.timestamp() > now:
            return int(candidate.timestamp())
        year, month = year + (month == 12), month % 12 + 1
    raise AssertionError("unreachable")


def _period_end(start: int, recurring: dict[str, Any] | None) -> int:
    interval = (recurring or {}).get("interval", "month")
    count = int((recurring or {}).get("interval_count", 1) or 1)
    if interval == "year":
        return _add_months(start, 12 * count)
    if interval == "week":
        return start + 7 * 86400 * count
    if interval == "day":
        return start + 86400 * count
    return _add_months(start, count)


# -- state ---------------------------------------------------------------------------------


class StripeState:
    """Customers, prices, subscriptions, events, idempotency records and faults.

    Safe to read from test threads; the accessors return deep copies.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        seed: int = 0,
        strict_prices: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.api_key = api_key
        self.strict_prices = strict_prices
        self.clock = clock
        self._seed = seed
        self._lock = threading.RLock()
        self._reset_locked()

    def _reset_locked(self) -> None:
        self._rng = random.Random(self._seed)
        self.webhook_url: str | None = getattr(self, "webhook_url", None)
        self.webhook_secret: str | None = getattr(self, "webhook_secret", None)
        self._customers: dict[str, dict[str, Any]] = {}
        self._prices: dict[str, dict[str, Any]] = {}
        self._subscriptions: dict[str, dict[str, Any]] = {}
        self._events: list[dict[str, Any]] = []
        self._idempotency_seen: list[tuple[str, str, str]] = []
        self._idempotency_store: dict[str, dict[str, Any]] = {}
        self._requests: list[dict[str, Any]] = []
        self._faults: list[Fault] = []
        self._products: dict[str, dict[str, Any]] = {}
        self._invoices: dict[str, dict[str, Any]] = {}
        self._invoiceitems: dict[str, dict[str, Any]] = {}
        self._test_clocks: dict[str, dict[str, Any]] = {}
        self._deliveries: list[dict[str, Any]] = []

    def reset(self) -> None:
        """Forget every object, event, key, request and fault."""
        with self._lock:
            self._reset_locked()

    def _now(self) -> int:
        return int(self.clock())

    def new_id(self, prefix: str) -> str:
        with self._lock:
            taken = (
                set(self._customers)
                | set(self._prices)
                | set(self._subscriptions)
                | set(self._products)
                | set(self._invoices)
                | set(self._invoiceitems)
                | set(self._test_clocks)
            )
            while True:
                candidate = (
                    prefix + "_" + "".join(self._rng.choice(_ID_ALPHABET) for _ in range(14))
                )
                if candidate not in taken:
                    return candidate

    # -- reading -------------------------------------------------------------------------

    def customers(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(list(self._customers.values()))

    def get_customer(self, customer_id: str) -> dict[str, Any] | None:
        with self._lock:
            return copy.deepcopy(self._customers.get(customer_id))

    def subscriptions(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(list(self._subscriptions.values()))

    def get_subscription(self, subscription_id: str) -> dict[str, Any] | None:
        with self._lock:
            return copy.deepcopy(self._subscriptions.get(subscription_id))

    def prices(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(list(self._prices.values()))

    def events(self, type: str | None = None) -> list[dict[str, Any]]:
        """Events in creation order (oldest first), optionally of one type."""
        with self._lock:
            return copy.deepcopy([e for e in self._events if type is None or e["type"] == type])

    def idempotency_keys(self) -> list[tuple[str, str, str]]:
        """Every ``Idempotency-Key`` seen, as ``(method, path, key)``, in arrival order."""
        with self._lock:
            return list(self._idempotency_seen)

    def requests(self) -> list[dict[str, Any]]:
        """Every API call, as
        ``{"method", "path", "params", "idempotency_key", "status", "replayed"}``."""
        with self._lock:
            return copy.deepcopy(self._requests)

    # -- writing from Python -------------------------------------------------------------

    def add_price(
        self,
        price_id: str | None = None,
        *,
        unit_amount: int = 0,
        currency: str = "usd",
        interval: str | None = "month",
        product: str | None = None,
        lookup_key: str | None = None,
        nickname: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        with self._lock:
            price = self._make_price(
                price_id or self.new_id("price"),
                unit_amount=unit_amount,
                currency=currency,
                recurring={"interval": interval, "interval_count": 1} if interval else None,
                product=product,
                lookup_key=lookup_key,
                nickname=nickname,
                metadata=metadata or {},
            )
            return copy.deepcopy(price)

    def add_event(
        self,
        type: str,
        obj: dict[str, Any],
        *,
        previous_attributes: dict[str, Any] | None = None,
        created: int | None = None,
        event_id: str | None = None,
        request_id: str | None = None,
        idempotency_key: str | None = None,
        api_version: str | None = None,
    ) -> dict[str, Any]:
        """Append a Stripe Event (any type, e.g. ``invoice.paid``) and return it."""
        with self._lock:
            data: dict[str, Any] = {"object": copy.deepcopy(obj)}
            if previous_attributes is not None:
                data["previous_attributes"] = copy.deepcopy(previous_attributes)
            event = {
                "id": event_id or self.new_id("evt"),
                "object": "event",
                "api_version": api_version or DEFAULT_API_VERSION,
                "created": int(created) if created is not None else self._now(),
                "data": data,
                "livemode": False,
                "pending_webhooks": 0,
                "request": {"id": request_id, "idempotency_key": idempotency_key},
                "type": type,
            }
            self._events.append(event)
            return copy.deepcopy(event)

    # -- faults --------------------------------------------------------------------------

    def inject_fault(
        self,
        method: str = "*",
        path_prefix: str = "/v1/",
        *,
        status: int = 500,
        count: int = 1,
        after_action: bool = False,
        type: str | None = None,
        message: str | None = None,
        code: str | None = None,
        should_retry: bool | None = None,
    ) -> Fault:
        fault = Fault(
            method, path_prefix, status, count, after_action, type, message, code, should_retry
        )
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def faults(self) -> list[dict[str, Any]]:
        with self._lock:
            return [asdict(f) for f in self._faults]

    def configure(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Apply a ``POST /_control/faults`` body; return ``{"faults": [...]}``."""
        if "path_prefix" in spec or "method" in spec:
            spec = {"faults": [spec]}
        unknown = set(spec) - {"clear", "faults"}
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)}")
        parsed = [Fault.parse(f) for f in spec.get("faults") or []]
        with self._lock:
            if spec.get("clear"):
                self._faults.clear()
            self._faults.extend(parsed)
        return {"faults": self.faults()}

    def _take_fault(self, method: str, path: str) -> Fault | None:
        for fault in self._faults:
            if fault.matches(method, path):
                fault.count -= 1
                if fault.count <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    # -- the API -------------------------------------------------------------------------

    def handle(
        self,
        method: str,
        path: str,
        params: dict[str, Any],
        headers: dict[str, str],
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """One API call: returns status, JSON body and extra headers."""
        method = method.upper()
        key = headers.get("idempotency-key")
        with self._lock:
            request_id = "req_" + "".join(self._rng.choice(_ID_ALPHABET) for _ in range(14))
            extra = {"Request-Id": request_id}
            entry: dict[str, Any] = {
                "method": method,
                "path": path,
                "params": copy.deepcopy(params),
                "idempotency_key": key,
                "status": None,
                "replayed": False,
            }
            self._requests.append(entry)

            def answer(
                status: int, body: dict[str, Any]
            ) -> tuple[int, dict[str, Any], dict[str, str]]:
                entry["status"] = status
                return status, body, extra

            auth = headers.get("authorization", "")
            token = auth[7:] if auth.startswith("Bearer ") else ""
            valid = (
                token == self.api_key
                if self.api_key is not None
                else token.startswith(("sk_", "rk_"))
            )
            if not valid:
                shown = (token[:8] + "*" * 4) if token else ""
                message = (
                    f"Invalid API Key provided: {shown}"
                    if token
                    else "You did not provide an API key. "
                    "Provide it in the Authorization header (Bearer auth)."
                )
                return answer(401, StripeError(401, message).body())

            if key:
                self._idempotency_seen.append((method, path, key))

            fault = self._take_fault(method, path)
            if fault is not None and fault.should_retry is not None:
                extra["Stripe-Should-Retry"] = "true" if fault.should_retry else "false"
            if fault is not None and not fault.after_action:
                err = fault.error()
                return answer(err.status, err.body())

            fingerprint = json.dumps(params, sort_keys=True)
            if key and method == "POST":
                stored = self._idempotency_store.get(key)
                if stored is not None:
                    if (
                        stored["method"] != method
                        or stored["path"] != path
                        or stored["params"] != fingerprint
                    ):
                        err = StripeError(
                            400,
                            "Keys for idempotent requests can only be used with the same "
                            "parameters they were first used with. Try using a key other than "
                            f"'{key}' if you "
                            "meant to execute a different request.",
                            type="idempotency_error",
                        )
                        return answer(err.status, err.body())
                    entry["replayed"] = True
                    extra["Idempotent-Replayed"] = "true"
                    extra["Original-Request"] = stored["request_id"]
                    if fault is not None:
                        err = fault.error()
                        return answer(err.status, err.body())
                    return answer(stored["status"], copy.deepcopy(stored["body"]))

            try:
                status, body = self._dispatch(method, path, params, request_id, key, headers)
            except StripeError as failure:
                return answer(failure.status, failure.body())

            if key and method == "POST" and 200 <= status < 300:
                self._idempotency_store[key] = {
                    "method": method,
                    "path": path,
                    "params": fingerprint,
                    "status": status,
                    "body": copy.deepcopy(body),
                    "request_id": request_id,
                }
            if fault is not None:  # after_action: done, but the answer is lost
                lost = fault.error()
                return answer(lost.status, lost.body())
            return answer(status, body)

    def _dispatch(
        self,
        method: str,
        path: str,
        params: dict[str, Any],
        request_id: str,
        key: str | None,
        headers: dict[str, str],
    ) -> tuple[int, dict[str, Any]]:
        parts = [p for p in path.split("/") if p][1:]  # drop "v1"
        ctx = {"request_id": request_id, "key": key, "api_version": headers.get("stripe-version")}
        routes: dict[tuple[str, str, int], Callable[..., dict[str, Any]]] = {
            ("POST", "customers", 1): self._create_customer,
            ("GET", "customers", 1): self._list_customers,
            ("GET", "customers", 2): self._get_customer,
            ("POST", "customers", 2): self._update_customer,
            ("DELETE", "customers", 2): self._delete_customer,
            ("POST", "prices", 1): self._create_price,
            ("GET", "prices", 1): self._list_prices,
            ("GET", "prices", 2): self._get_price,
            ("POST", "subscriptions", 1): self._create_subscription,
            ("GET", "subscriptions", 1): self._list_subscriptions,
            ("GET", "subscriptions", 2): self._get_subscription,
            ("POST", "subscriptions", 2): self._update_subscription,
            ("DELETE", "subscriptions", 2): self._cancel_subscription,
            ("GET", "events", 1): self._list_events,
            ("POST", "products", 1): self._create_product,
            ("GET", "products", 1): self._list_products,
            ("GET", "products", 2): self._get_product,
            ("POST", "products", 2): self._update_product,
            ("POST", "prices", 2): self._update_price,
            ("POST", "invoiceitems", 1): self._create_invoiceitem,
            ("GET", "invoiceitems", 1): self._list_invoiceitems,
            ("GET", "invoiceitems", 2): self._get_invoiceitem,
            ("GET", "invoices", 1): self._list_invoices,
            ("POST", "invoices", 1): self._create_invoice,
            ("GET", "invoices", 2): self._get_invoice,
            ("POST", "invoices", 3): self._invoice_action,
            ("POST", "test_helpers", 2): self._create_test_clock,
            ("GET", "test_helpers", 3): self._get_test_clock,
            ("POST", "test_helpers", 4): self._advance_test_clock,
            ("GET", "events", 2): self._get_event,
        }
        handler = routes.get((method, parts[0], len(parts))) if parts else None
        if handler is None:
            raise StripeError(404, f"Unrecognized request URL ({method}: {path}).")
        args = parts[1:]
        return 200, handler(*args, params=params, ctx=ctx)

    def _emit(
        self,
        type: str,
        obj: dict[str, Any],
        ctx: dict[str, Any],
        previous_attributes: dict[str, Any] | None = None,
    ) -> None:
        self.add_event(
            type,
            obj,
            previous_attributes=previous_attributes,
            request_id=ctx["request_id"],
            idempotency_key=ctx["key"],
            api_version=ctx["api_version"],
        )

    def _list(
        self, items: list[dict[str, Any]], params: dict[str, Any], url: str
    ) -> dict[str, Any]:
        """Stripe pagination over ``items`` (already newest first)."""
        limit = _int(params.get("limit", 10), "limit")
        if not 1 <= limit <= 100:
            raise StripeError(400, "Invalid limit: must be between 1 and 100", param="limit")
        ids = [item["id"] for item in items]
        if params.get("starting_after"):
            cursor = params["starting_after"]
            if cursor not in ids:
                raise _missing("object", cursor, "starting_after")
            items = items[ids.index(cursor) + 1 :]
            page, has_more = items[:limit], len(items) > limit
        elif params.get("ending_before"):
            cursor = params["ending_before"]
            if cursor not in ids:
                raise _missing("object", cursor, "ending_before")
            items = items[: ids.index(cursor)]
            page, has_more = items[-limit:], len(items) > limit
        else:
            page, has_more = items[:limit], len(items) > limit
        return {"object": "list", "data": copy.deepcopy(page), "has_more": has_more, "url": url}

    @staticmethod
    def _created_filter(params: dict[str, Any]) -> Callable[[int], bool]:
        created = params.get("created")
        if created is None:
            return lambda _: True
        if not isinstance(created, dict):
            exact = _int(created, "created")
            return lambda c: c == exact
        bounds = {op: _int(v, f"created[{op}]") for op, v in created.items()}
        unknown = set(bounds) - {"gt", "gte", "lt", "lte"}
        if unknown:
            raise StripeError(
                400,
                f"Received unknown parameter: created[{sorted(unknown)[0]}]",
                code="parameter_unknown",
                param="created",
            )

        def check(c: int) -> bool:
            return (
                ("gt" not in bounds or c > bounds["gt"])
                and ("gte" not in bounds or c >= bounds["gte"])
                and ("lt" not in bounds or c < bounds["lt"])
                and ("lte" not in bounds or c <= bounds["lte"])
            )

        return check

    # customers

    def _create_customer(self, *, params: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
        now = self._now()
        if params.get("test_clock"):
            now = self._clock(params["test_clock"], "test_clock")["frozen_time"]
        customer: dict[str, Any] = {
            "id": self.new_id("cus"),
            "object": "customer",
            "address": None,
            "balance": 0,
            "created": now,
            "currency": None,
            "default_source": None,
            "delinquent": False,
            "description": params.get("description"),
            "email": params.get("email"),
            "invoice_prefix": "".join(self._rng.choice(string.ascii_uppercase) for _ in range(8)),
            "invoice_settings": {
                "custom_fields": None,
                "default_payment_method": None,
                "footer": None,
                "rendering_options": None,
            },
            "livemode": False,
            "metadata": _merge_metadata({}, params.get("metadata")),
            "name": params.get("name"),
            "phone": params.get("phone"),
            "preferred_locales": [],
            "shipping": None,
            "tax_exempt": "none",
            "test_clock": self._clock_param(params.get("test_clock")),
        }
        self._customers[customer["id"]] = customer
        self._emit("customer.created", customer, ctx)
        return copy.deepcopy(customer)

    def _customer(self, customer_id: str, param: str = "id") -> dict[str, Any]:
        customer = self._customers.get(customer_id)
        if customer is None:
            raise _missing("customer", customer_id, param)
        return customer

    def _get_customer(
        self, customer_id: str, *, params: dict[str, Any], ctx: dict[str, Any]
    ) -> dict[str, Any]:
        return copy.deepcopy(self._customer(customer_id))

    def _list_customers(self, *, params: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
        items = [c for c in reversed(self._customers.values()) if not c.get("deleted")]
        if params.get("email"):
            items = [c for c in items if c.get("email") == params["email"]]
        return self._list(items, params, "/v1/customers")

    def _update_customer(
        self, customer_id: str, *, params: dict[str, Any], ctx: dict[str, Any]
    ) -> dict[str, Any]:
        customer = self._customer(customer_id)
        if customer.get("deleted"):
            raise StripeError(400, "Cannot update a deleted customer", param="id")
        previous: dict[str, Any] = {}
        for field in ("email", "name", "description", "phone"):
            if field in params and params[field] != customer.get(field):
                previous[field] = customer.get(field)
                customer[field] = params[field] or None
        if "metadata" in params:
            merged = _merge_metadata(customer["metadata"], params["metadata"])
            if merged != customer["metadata"]:
                previous["metadata"] = customer["metadata"]
                customer["metadata"] = merged
        if previous:
            self._emit("customer.updated", customer, ctx, previous)
        return copy.deepcopy(customer)

    def _delete_customer(
        self, customer_id: str, *, params: dict[str, Any], ctx: dict[str, Any]
    ) -> dict[str, Any]:
        customer = self._customer(customer_id)
        if customer.get("deleted"):
            raise _missing("customer", customer_id)
        snapshot = copy.deepcopy(customer)
        self._customers[customer_id] = {"id": customer_id, "object": "customer", "deleted": True}
        self._emit("customer.deleted", snapshot, ctx)
        return {"id": customer_id, "object": "customer", "deleted": True}

    # prices

    def _make_price(
        self,
        price_id: str,
        *,
        unit_amount: int,
        currency: str,
        recurring: dict[str, Any] | None,
        product: str | None,
        lookup_key: str | None,
        nickname: str | None,
        metadata: dict[str, str],
    ) -> dict[str, Any]:
        price = {
            "id": price_id,
            "object": "price",
            "active": True,
            "billing_scheme": "per_unit",
            "created": self._now(),
            "currency": currency,
            "livemode": False,
            "lookup_key": lookup_key,
            "metadata": dict(metadata),
            "nickname": nickname,
            "product": product or self.new_id("prod"),
            "recurring": (
                {
                    "interval": recurring.get("interval", "month"),
                    "interval_count": int(recurring.get("interval_count", 1) or 1),
                    "meter": None,
                    "usage_type": recurring.get("usage_type", "licensed"),
                }
                if recurring
                else None
            ),
            "tax_behavior": "unspecified",
            "type": "recurring" if recurring else "one_time",
            "unit_amount": unit_amount,
            "unit_amount_decimal": str(unit_amount),
        }
        self._prices[price_id] = price
        return price

    def _price(self, price_id: str, param: str) -> dict[str, Any]:
        price = self._prices.get(price_id)
        if price is None:
            if self.strict_prices or not isinstance(price_id, str) or not price_id:
                raise _missing("price", str(price_id), param)
            price = self._make_price(
                price_id,
                unit_amount=0,
                currency="usd",
                recurring={"interval": "month"},
                product=None,
                lookup_key=None,
                nickname=None,
                metadata={},
            )
        return price

    def _create_price(self, *, params: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
        if "currency" not in params:
            raise StripeError(
                400, "Missing required param: currency.", code="parameter_missing", param="currency"
            )
        recurring = params.get("recurring")
        lookup_key = params.get("lookup_key")
        self._take_lookup_key(lookup_key, params, None)
        product = params.get("product")
        product_data = params.get("product_data")
        if not product and isinstance(product_data, dict):
            product = self._create_product(params=product_data, ctx=ctx)["id"]
        elif product:
            self._product(product, "product")
        price = self._make_price(
            self.new_id("price"),
            unit_amount=_int(params.get("unit_amount", 0), "unit_amount"),
            currency=params["currency"],
            recurring=recurring if isinstance(recurring, dict) else None,
            product=product,
            lookup_key=lookup_key,
            nickname=params.get("nickname"),
            metadata=_merge_metadata({}, params.get("metadata")),
        )
        self._emit("price.created", price, ctx)
        return copy.deepcopy(price)

    def _get_price(
        self, price_id: str, *, params: dict[str, Any], ctx: dict[str, Any]
    ) -> dict[str, Any]:
        if price_id not in self._prices:
            raise _missing("price", price_id)
        return copy.deepcopy(self._prices[price_id])

    def _list_prices(self, *, params: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
        items = list(reversed(self._prices.values()))
        keys = params.get("lookup_keys")
        if keys is not None:
            wanted = set(keys if isinstance(keys, list) else [keys])
            items = [p for p in items if p.get("lookup_key") in wanted]
        if "active" in params:
            active = _bool(params["active"], "active")
            items = [p for p in items if p["active"] == active]
        if params.get("product"):
            items = [p for p in items if p["product"] == params["product"]]
        return self._list(items, params, "/v1/prices")

    # subscriptions

    def _make_item(
        self, subscription: dict[str, Any], spec: dict[str, Any], index: int
    ) -> dict[str, Any]:
        price = self._price(spec.get("price", ""), f"items[{index}][price]")
        return {
            "id": self.new_id("si"),
            "object": "subscription_item",
            "created": self._now(),
            "current_period_start": subscription["current_period_start"],
            "current_period_end": subscription["current_period_end"],
            "discounts": [],
            "metadata": _merge_metadata({}, spec.get("metadata")),
            "price": copy.deepcopy(price),
            "quantity": _int(spec.get("quantity", 1), f"items[{index}][quantity]"),
            "subscription": subscription["id"],
            "tax_rates": [],
        }

    def _items_list(self, subscription_id: str, items: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "object": "list",
            "data": items,
            "has_more": False,
            "total_count": len(items),
            "url": f"/v1/subscription_items?subscription={subscription_id}",
        }

    @staticmethod
    def _item_specs(params: dict[str, Any]) -> list[dict[str, Any]]:
        items = params.get("items")
        if items is None:
            return []
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise StripeError(400, "Invalid array", param="items")
        return items

    def _create_subscription(
        self, *, params: dict[str, Any], ctx: dict[str, Any]
    ) -> dict[str, Any]:
        if not params.get("customer"):
            raise StripeError(
                400, "Missing required param: customer.", code="parameter_missing", param="customer"
            )
        customer = self._customer(params["customer"], "customer")
        if customer.get("deleted"):
            raise _missing("customer", params["customer"], "customer")
        specs = self._item_specs(params)
        if not specs:
            raise StripeError(
                400, "Missing required param: items.", code="parameter_missing", param="items"
            )
        now = self._customer_now(customer)
        trial_days = params.get("trial_period_days")
        trial_end = now + 86400 * _int(trial_days, "trial_period_days") if trial_days else None
        first_price = self._price(specs[0].get("price", ""), "items[0][price]")
        period_end = trial_end or _period_end(now, first_price.get("recurring"))
        anchor_config = params.get("billing_cycle_anchor_config")
        if isinstance(anchor_config, dict) and not trial_end:
            period_end = _anchor_after(now, anchor_config)
        subscription: dict[str, Any] = {
            "id": self.new_id("sub"),
            "object": "subscription",
            "application": None,
            "billing_cycle_anchor": period_end if trial_end or anchor_config else now,
            "cancel_at": None,
            "cancel_at_period_end": _bool(
                params.get("cancel_at_period_end", False), "cancel_at_period_end"
            ),
            "canceled_at": None,
            "cancellation_details": {"comment": None, "feedback": None, "reason": None},
            "collection_method": params.get("collection_method", "charge_automatically"),
            "created": now,
            "currency": first_price["currency"],
            "current_period_start": now,
            "current_period_end": period_end,
            "customer": customer["id"],
            "days_until_due": params.get("days_until_due"),
            "default_payment_method": None,
            "description": params.get("description"),
            "discounts": [],
            "ended_at": None,
            "latest_invoice": None,
            "livemode": False,
            "metadata": _merge_metadata({}, params.get("metadata")),
            "start_date": now,
            "status": "trialing" if trial_end else "active",
            "test_clock": customer.get("test_clock"),
            "trial_end": trial_end,
            "trial_start": now if trial_end else None,
        }
        items = [self._make_item(subscription, spec, i) for i, spec in enumerate(specs)]
        subscription["items"] = self._items_list(subscription["id"], items)
        self._subscriptions[subscription["id"]] = subscription
        self._emit("customer.subscription.created", subscription, ctx)
        return copy.deepcopy(subscription)

    def _subscription(self, subscription_id: str) -> dict[str, Any]:
        subscription = self._subscriptions.get(subscription_id)
        if subscription is None:
            raise _missing("subscription", subscription_id)
        return subscription

    def _get_subscription(
        self, subscription_id: str, *, params: dict[str, Any], ctx: dict[str, Any]
    ) -> dict[str, Any]:
        return copy.deepcopy(self._subscription(subscription_id))

    def _list_subscriptions(self, *, params: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
        items = list(reversed(self._subscriptions.values()))
        if params.get("customer"):
            items = [s for s in items if s["customer"] == params["customer"]]
        if params.get("price"):
            items = [
                s
                for s in items
                if any(i["price"]["id"] == params["price"] for i in s["items"]["data"])
            ]
        status = params.get("status")
        if status is None:
            items = [s for s in items if s["status"] != "canceled"]
        elif status != "all":
            items = [s for s in items if s["status"] == status]
        return self._list(items, params, "/v1/subscriptions")

    def _update_subscription(
        self, subscription_id: str, *, params: dict[str, Any], ctx: dict[str, Any]
    ) -> dict[str, Any]:
        subscription = self._subscription(subscription_id)
        behavior = params.get("proration_behavior")
        if behavior is not None and behavior not in _PRORATION_BEHAVIORS:
            raise StripeError(
                400,
                f"Invalid proration_behavior: must be one of {', '.join(_PRORATION_BEHAVIORS)}",
                param="proration_behavior",
            )
        specs = self._item_specs(params)
        if subscription["status"] == "canceled" and (specs or "cancel_at_period_end" in params):
            raise StripeError(
                400,
                "A canceled subscription can only update its cancellation_details and metadata.",
                param="items" if specs else "cancel_at_period_end",
            )
        before = {f: copy.deepcopy(subscription[f]) for f in _SUBSCRIPTION_EVENT_FIELDS}

        items = copy.deepcopy(subscription["items"]["data"])
        for index, spec in enumerate(specs):
            item_id = spec.get("id")
            if item_id:
                match = next((i for i in items if i["id"] == item_id), None)
                if match is None:
                    raise StripeError(
                        400,
                        f"No such subscription item: '{item_id}'",
                        code="resource_missing",
                        param=f"items[{index}][id]",
                    )
                if _bool(spec.get("deleted", False), f"items[{index}][deleted]"):
                    items.remove(match)
                    continue
                if spec.get("price"):
                    match["price"] = copy.deepcopy(
                        self._price(spec["price"], f"items[{index}][price]")
                    )
                if "quantity" in spec:
                    match["quantity"] = _int(spec["quantity"], f"items[{index}][quantity]")
                if "metadata" in spec:
                    match["metadata"] = _merge_metadata(match["metadata"], spec["metadata"])
            else:
                if not spec.get("price"):
                    raise StripeError(
                        400,
                        "Missing required param: items[0][price].",
                        code="parameter_missing",
                        param=f"items[{index}][price]",
                    )
                items.append(self._make_item(subscription, spec, index))
        if specs and not items:
            raise StripeError(
                400, "A subscription must have at least one active plan.", param="items"
            )
        subscription["items"] = self._items_list(subscription_id, items)
        if "metadata" in params:
            subscription["metadata"] = _merge_metadata(subscription["metadata"], params["metadata"])
        if "cancel_at_period_end" in params:
            subscription["cancel_at_period_end"] = _bool(
                params["cancel_at_period_end"], "cancel_at_period_end"
            )
            subscription["cancel_at"] = (
                subscription["current_period_end"] if subscription["cancel_at_period_end"] else None
            )
        previous = {f: v for f, v in before.items() if subscription[f] != v}
        if previous:
            self._emit("customer.subscription.updated", subscription, ctx, previous)
        return copy.deepcopy(subscription)

    def _cancel_subscription(
        self, subscription_id: str, *, params: dict[str, Any], ctx: dict[str, Any]
    ) -> dict[str, Any]:
        subscription = self._subscription(subscription_id)
        if subscription["status"] == "canceled":
            raise StripeError(
                400,
                f"This subscription ({subscription_id}) has already been canceled.",
                code="resource_missing",
                param="id",
            )
        # Stripe's defaults: no proration credit, no invoice at cancellation. The stand-in does
        # not make the final invoice Stripe's `invoice_now` would; meterbridge never asks for it.
        if _bool(params.get("invoice_now", False), "invoice_now"):
            raise StripeError(
                400, "invoice_now is not supported by the Stripe stand-in", param="invoice_now"
            )
        _bool(params.get("prorate", False), "prorate")
        now = self._customer_now(self._customer(subscription["customer"], "customer"))
        subscription.update(status="canceled", canceled_at=now, ended_at=now)
        details = params.get("cancellation_details")
        if isinstance(details, dict):
            subscription["cancellation_details"] = {
                "comment": details.get("comment"),
                "feedback": details.get("feedback"),
                "reason": "cancellation_requested",
            }
        else:
            subscription["cancellation_details"] = {
                "comment": None,
                "feedback": None,
                "reason": "cancellation_requested",
            }
        self._emit("customer.subscription.deleted", subscription, ctx)
        return copy.deepcopy(subscription)

    # test clocks, products, invoices (issue 15)

    def _clock(self, clock_id: str, param: str = "id") -> dict[str, Any]:
        clock = self._test_clocks.get(clock_id)
        if clock is None:
            raise _missing("test_helpers.test_clock", clock_id, param)
        return clock

    def _clock_param(self, clock_id: Any) -> str | None:
        return str(clock_id) if clock_id else None

    def _customer_now(self, customer: dict[str, Any]) -> int:
        """Now for ``customer``: its test clock's frozen time, else the wall clock."""
        clock_id = customer.get("test_clock")
        if clock_id and clock_id in self._test_clocks:
            return int(self._test_clocks[clock_id]["frozen_time"])
        return self._now()

    def _create_test_clock(
        self, kind: str, *, params: dict[str, Any], ctx: dict[str, Any]
    ) -> dict[str, Any]:
        if kind != "test_clocks":
            raise StripeError(404, f"Unrecognized request URL (POST: /v1/test_helpers/{kind}).")
        if "frozen_time" not in params:
            raise StripeError(
                400,
                "Missing required param: frozen_time.",
                code="parameter_missing",
                param="frozen_time",
            )
        frozen = _int(params["frozen_time"], "frozen_time")
        clock: dict[str, Any] = {
            "id": self.new_id("clock"),
            "object": "test_helpers.test_clock",
            "created": self._now(),
            "deletes_after": self._now() + 30 * 86400,
            "frozen_time": frozen,
            "livemode": False,
            "name": params.get("name"),
            "status": "ready",
            "status_details": {},
        }
        self._test_clocks[clock["id"]] = clock
        return copy.deepcopy(clock)

    def _get_test_clock(
        self, kind: str, clock_id: str, *, params: dict[str, Any], ctx: dict[str, Any]
    ) -> dict[str, Any]:
        return copy.deepcopy(self._clock(clock_id))

    def _advance_test_clock(
        self, kind: str, clock_id: str, action: str, *, params: dict[str, Any], ctx: dict[str, Any]
    ) -> dict[str, Any]:
        clock = self._clock(clock_id)
        if action != "advance":
            raise StripeError(404, f"Unrecognized request URL (POST: {action}).")
        target = _int(params.get("frozen_time"), "frozen_time")
        if clock["status"] != "ready":
            raise StripeError(
                400, "The test clock is already advancing.", code="test_clock_advancing"
            )
        if target <= clock["frozen_time"]:
            raise StripeError(
                400,
                "The frozen_time must be after the test clock's current frozen_time.",
                param="frozen_time",
            )
        clock["status"] = "advancing"
        clock["status_details"] = {"advancing": {"target_frozen_time": target}}
        # As Stripe: the answer says "advancing"; the clock is "ready" once every renewal,
        # finalization and payment up to the target is done and its webhooks were delivered.
        threading.Thread(
            target=self._run_advance, args=(clock_id, target), daemon=True, name="test-clock"
        ).start()
        return copy.deepcopy(clock)

    def _run_advance(self, clock_id: str, target: int) -> None:
        while True:
            with self._lock:
                clock = self._test_clocks[clock_id]
                step = self._next_clock_action(clock_id, target)
                seen = len(self._events)
                if step is None:
                    clock["frozen_time"] = target
                else:
                    clock["frozen_time"] = step[0]
                    step[1]()
                # The clock's own events (renewals, invoices) go to the webhook endpoint.
                pending = copy.deepcopy(self._events[seen:]) if self.webhook_url else []
            for event in pending:
                self.deliver(event)
            if step is None:
                with self._lock:
                    clock["status"] = "ready"
                    clock["status_details"] = {}
                return

    def _next_clock_action(
        self, clock_id: str, target: int
    ) -> tuple[int, Callable[[], None]] | None:
        on_clock = {c for c, v in self._customers.items() if v.get("test_clock") == clock_id}
        steps: list[tuple[int, Callable[[], None]]] = []
        for sub in self._subscriptions.values():
            if (
                sub["customer"] in on_clock
                and sub["status"] in ("active", "trialing", "past_due")
                and sub["current_period_end"] <= target
            ):
                steps.append((sub["current_period_end"], partial(self._renew, sub)))
        for invoice in self._invoices.values():
            due = invoice["created"] + 3600
            if (
                invoice["customer"] in on_clock
                and invoice["status"] == "draft"
                and invoice["auto_advance"]
                and due <= target
            ):
                steps.append((due, partial(self._finalize_and_pay, invoice)))
        return min(steps, key=lambda s: s[0]) if steps else None

    def _clock_time(self, customer_id: str) -> int:
        return self._customer_now(self._customers[customer_id])

    def _renew(self, sub: dict[str, Any]) -> None:
        """A subscription crosses its period end: the draft cycle invoice, then the new period."""
        start, end = sub["current_period_start"], sub["current_period_end"]
        if sub["cancel_at_period_end"]:
            sub.update(status="canceled", canceled_at=end, ended_at=end)
            self.add_event("customer.subscription.deleted", sub, created=end)
            return
        first = sub["items"]["data"][0]["price"]
        new_end = _period_end(end, first.get("recurring"))
        lines = [
            {
                "id": self.new_id("il"),
                "object": "line_item",
                "amount": int(item["price"]["unit_amount"] or 0) * int(item["quantity"]),
                "currency": item["price"]["currency"],
                "description": f"{item['quantity']} x subscription",
                "metadata": dict(item["metadata"]),
                "period": {"start": end, "end": new_end},
                "parent": {
                    "type": "subscription_item_details",
                    "subscription_item_details": {
                        "subscription": sub["id"],
                        "subscription_item": item["id"],
                        "proration": False,
                    },
                },
            }
            for item in sub["items"]["data"]
        ]
        invoice = self._new_invoice(
            sub["customer"],
            sub["currency"],
            created=end,
            period=(start, end),
            billing_reason="subscription_cycle",
            subscription=sub,
            lines=lines,
        )
        for item in self._invoiceitems.values():
            if item["customer"] == sub["customer"] and item["invoice"] is None:
                self._attach_item(invoice, item)
        sub["current_period_start"], sub["current_period_end"] = end, new_end
        sub["latest_invoice"] = invoice["id"]
        for item in sub["items"]["data"]:
            item["current_period_start"], item["current_period_end"] = end, new_end
        self.add_event("invoice.created", invoice, created=end)
        self.add_event(
            "customer.subscription.updated",
            sub,
            previous_attributes={"current_period_start": start, "current_period_end": end},
            created=end,
        )

    def _new_invoice(
        self,
        customer_id: str,
        currency: str,
        *,
        created: int,
        period: tuple[int, int],
        billing_reason: str,
        subscription: dict[str, Any] | None,
        lines: list[dict[str, Any]],
    ) -> dict[str, Any]:
        invoice_id = self.new_id("in")
        for line in lines:
            line["invoice"] = invoice_id
        invoice: dict[str, Any] = {
            "id": invoice_id,
            "object": "invoice",
            "amount_due": 0,
            "amount_paid": 0,
            "amount_remaining": 0,
            "auto_advance": True,
            "billing_reason": billing_reason,
            "collection_method": "charge_automatically",
            "created": created,
            "currency": currency,
            "customer": customer_id,
            "effective_at": None,
            "lines": {
                "object": "list",
                "data": lines,
                "has_more": False,
                "total_count": len(lines),
                "url": f"/v1/invoices/{invoice_id}/lines",
            },
            "livemode": False,
            "metadata": {},
            "number": None,
            "parent": (
                {
                    "type": "subscription_details",
                    "quote_details": None,
                    "subscription_details": {
                        "subscription": subscription["id"],
                        "metadata": dict(subscription["metadata"]),
                    },
                }
                if subscription
                else None
            ),
            "period_start": period[0],
            "period_end": period[1],
            "status": "draft",
            "status_transitions": {"finalized_at": None, "paid_at": None, "voided_at": None},
            "subtotal": 0,
            "test_clock": self._customers[customer_id].get("test_clock"),
            "total": 0,
        }
        self._invoices[invoice_id] = invoice
        self._total(invoice)
        return invoice

    @staticmethod
    def _total(invoice: dict[str, Any]) -> None:
        total = sum(int(line["amount"]) for line in invoice["lines"]["data"])
        invoice["lines"]["total_count"] = len(invoice["lines"]["data"])
        paid = invoice["status"] == "paid"
        invoice.update(
            subtotal=total,
            total=total,
            amount_due=total,
            amount_paid=total if paid else 0,
            amount_remaining=0 if paid else total,
        )

    def _attach_item(self, invoice: dict[str, Any], item: dict[str, Any]) -> None:
        item["invoice"] = invoice["id"]
        invoice["lines"]["data"].append(
            {
                "id": self.new_id("il"),
                "object": "line_item",
                "amount": item["amount"],
                "currency": item["currency"],
                "description": item["description"],
                "invoice": invoice["id"],
                "metadata": dict(item["metadata"]),
                "period": dict(item["period"]),
                "parent": {
                    "type": "invoice_item_details",
                    "invoice_item_details": {"invoice_item": item["id"], "proration": False},
                },
            }
        )
        self._total(invoice)

    def _finalize(self, invoice: dict[str, Any]) -> None:
        if invoice["status"] != "draft":
            raise StripeError(
                400,
                f"This invoice is already finalized, you can't re-finalize a non-draft invoice "
                f"({invoice['id']}).",
                code="invoice_not_editable",
            )
        now = self._clock_time(invoice["customer"])
        invoice["status"] = "open"
        invoice["number"] = f"MB-{len([i for i in self._invoices.values() if i['number']]) + 1:04d}"
        invoice["effective_at"] = now
        invoice["status_transitions"]["finalized_at"] = now
        self._total(invoice)
        self.add_event("invoice.finalized", invoice, created=now)

    def _pay(self, invoice: dict[str, Any]) -> None:
        if invoice["status"] == "draft":
            self._finalize(invoice)
        if invoice["status"] != "open":
            raise StripeError(400, "Invoice is already paid", code="invoice_already_paid")
        now = self._clock_time(invoice["customer"])
        invoice["status"] = "paid"
        invoice["status_transitions"]["paid_at"] = now
        self._total(invoice)
        self.add_event("invoice.paid", invoice, created=now)

    def _finalize_and_pay(self, invoice: dict[str, Any]) -> None:
        self._finalize(invoice)
        self._pay(invoice)

    def _invoice(self, invoice_id: str, param: str = "id") -> dict[str, Any]:
        invoice = self._invoices.get(invoice_id)
        if invoice is None:
            raise _missing("invoice", invoice_id, param)
        return invoice

    def _get_invoice(
        self, invoice_id: str, *, params: dict[str, Any], ctx: dict[str, Any]
    ) -> dict[str, Any]:
        return copy.deepcopy(self._invoice(invoice_id))

    def _list_invoices(self, *, params: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
        items = list(reversed(self._invoices.values()))
        for field in ("customer", "status"):
            if params.get(field):
                items = [i for i in items if i[field] == params[field]]
        if params.get("subscription"):
            items = [
                i
                for i in items
                if (i["parent"] or {}).get("subscription_details", {}).get("subscription")
                == params["subscription"]
            ]
        return self._list(items, params, "/v1/invoices")

    def _create_invoice(self, *, params: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/invoices``: a one-off draft for a customer. ``pending_invoice_items_behavior``
        ``include`` (Stripe's default) pulls the customer's pending items in, ``exclude`` leaves
        them; items may then be added with ``invoiceitems`` ``invoice=``."""
        if not params.get("customer"):
            raise StripeError(
                400, "Missing required param: customer.", code="parameter_missing", param="customer"
            )
        customer = self._customer(params["customer"], "customer")
        behavior = params.get("pending_invoice_items_behavior", "include")
        if behavior not in ("include", "exclude"):
            raise StripeError(
                400,
                "Invalid pending_invoice_items_behavior: must be one of include or exclude",
                param="pending_invoice_items_behavior",
            )
        now = self._customer_now(customer)
        invoice = self._new_invoice(
            customer["id"],
            params.get("currency") or "usd",
            created=now,
            period=(now, now),
            billing_reason="manual",
            subscription=None,
            lines=[],
        )
        invoice["metadata"] = _merge_metadata({}, params.get("metadata"))
        invoice["description"] = params.get("description")
        invoice["auto_advance"] = _bool(params.get("auto_advance", False), "auto_advance")
        if behavior == "include":
            for item in self._invoiceitems.values():
                if item["customer"] == customer["id"] and item["invoice"] is None:
                    self._attach_item(invoice, item)
        self._emit("invoice.created", invoice, ctx)
        return copy.deepcopy(invoice)

    def _invoice_action(
        self, invoice_id: str, action: str, *, params: dict[str, Any], ctx: dict[str, Any]
    ) -> dict[str, Any]:
        invoice = self._invoice(invoice_id)
        if action == "finalize":
            self._finalize(invoice)
        elif action == "pay":
            self._pay(invoice)
        else:
            raise StripeError(404, f"Unrecognized request URL (POST: {action}).")
        return copy.deepcopy(invoice)

    def _create_invoiceitem(self, *, params: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
        if not params.get("customer"):
            raise StripeError(
                400, "Missing required param: customer.", code="parameter_missing", param="customer"
            )
        customer = self._customer(params["customer"], "customer")
        invoice = None
        if params.get("invoice"):
            invoice = self._invoice(params["invoice"], "invoice")
            if invoice["customer"] != customer["id"]:
                raise StripeError(400, "The invoice belongs to another customer.", param="invoice")
            if invoice["status"] != "draft":
                raise StripeError(
                    400,
                    "You can only add invoice items to draft invoices.",
                    code="invoice_not_editable",
                    param="invoice",
                )
        if "amount" not in params:
            raise StripeError(
                400, "Missing required param: amount.", code="parameter_missing", param="amount"
            )
        now = self._customer_now(customer)
        raw_period = params.get("period")
        period: dict[str, Any] = raw_period if isinstance(raw_period, dict) else {}
        item: dict[str, Any] = {
            "id": self.new_id("ii"),
            "object": "invoiceitem",
            "amount": _int(params["amount"], "amount"),
            "currency": params.get("currency") or (invoice or {}).get("currency") or "usd",
            "customer": customer["id"],
            "date": now,
            "description": params.get("description"),
            "discountable": True,
            "invoice": None,
            "livemode": False,
            "metadata": _merge_metadata({}, params.get("metadata")),
            "period": {
                "start": _int(period.get("start", now), "period[start]"),
                "end": _int(period.get("end", now), "period[end]"),
            },
            "proration": False,
            "quantity": 1,
            "test_clock": customer.get("test_clock"),
        }
        self._invoiceitems[item["id"]] = item
        if invoice is not None:
            self._attach_item(invoice, item)
        self._emit("invoiceitem.created", item, ctx)
        return copy.deepcopy(item)

    def _get_invoiceitem(
        self, item_id: str, *, params: dict[str, Any], ctx: dict[str, Any]
    ) -> dict[str, Any]:
        item = self._invoiceitems.get(item_id)
        if item is None:
            raise _missing("invoiceitem", item_id)
        return copy.deepcopy(item)

    def _list_invoiceitems(self, *, params: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
        items = list(reversed(self._invoiceitems.values()))
        for field in ("customer", "invoice"):
            if params.get(field):
                items = [i for i in items if i[field] == params[field]]
        if "pending" in params and _bool(params["pending"], "pending"):
            items = [i for i in items if i["invoice"] is None]
        return self._list(items, params, "/v1/invoiceitems")

    def _product(self, product_id: str, param: str = "id") -> dict[str, Any]:
        product = self._products.get(product_id)
        if product is None:
            raise _missing("product", product_id, param)
        return product

    def _create_product(self, *, params: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
        if not params.get("name"):
            raise StripeError(
                400, "Missing required param: name.", code="parameter_missing", param="name"
            )
        product_id = params.get("id") or self.new_id("prod")
        if product_id in self._products:
            raise StripeError(
                400, f"Product already exists: '{product_id}'", code="resource_already_exists"
            )
        product = {
            "id": product_id,
            "object": "product",
            "active": True,
            "created": self._now(),
            "description": params.get("description"),
            "livemode": False,
            "metadata": _merge_metadata({}, params.get("metadata")),
            "name": params["name"],
            "updated": self._now(),
        }
        self._products[product_id] = product
        self._emit("product.created", product, ctx)
        return copy.deepcopy(product)

    def _get_product(
        self, product_id: str, *, params: dict[str, Any], ctx: dict[str, Any]
    ) -> dict[str, Any]:
        return copy.deepcopy(self._product(product_id))

    def _list_products(self, *, params: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
        return self._list(list(reversed(self._products.values())), params, "/v1/products")

    def _update_product(
        self, product_id: str, *, params: dict[str, Any], ctx: dict[str, Any]
    ) -> dict[str, Any]:
        product = self._product(product_id)
        for field in ("name", "description"):
            if field in params:
                product[field] = params[field]
        if "active" in params:
            product["active"] = _bool(params["active"], "active")
        if "metadata" in params:
            product["metadata"] = _merge_metadata(product["metadata"], params["metadata"])
        product["updated"] = self._now()
        self._emit("product.updated", product, ctx)
        return copy.deepcopy(product)

    def _take_lookup_key(
        self, key: str | None, params: dict[str, Any], price: dict[str, Any] | None
    ) -> None:
        """Free ``key`` for ``price`` (a new one when None): another price holding it gives it
        up with ``transfer_lookup_key``, else the request fails as Stripe's does."""
        holder = next(
            (p for p in self._prices.values() if key and p.get("lookup_key") == key), None
        )
        if holder is None or holder is price:
            return
        if not _bool(params.get("transfer_lookup_key", False), "transfer_lookup_key"):
            raise StripeError(
                400, f"A price (`{holder['id']}`) already uses that lookup key.", param="lookup_key"
            )
        holder["lookup_key"] = None

    def _update_price(
        self, price_id: str, *, params: dict[str, Any], ctx: dict[str, Any]
    ) -> dict[str, Any]:
        if price_id not in self._prices:
            raise _missing("price", price_id)
        price = self._prices[price_id]
        if "active" in params:
            price["active"] = _bool(params["active"], "active")
        if "nickname" in params:
            price["nickname"] = params["nickname"] or None
        if "metadata" in params:
            price["metadata"] = _merge_metadata(price["metadata"], params["metadata"])
        if "lookup_key" in params:
            key = params["lookup_key"] or None
            self._take_lookup_key(key, params, price)
            price["lookup_key"] = key
        self._emit("price.updated", price, ctx)
        return copy.deepcopy(price)

    # webhook delivery

    def set_webhook(self, url: str | None, secret: str | None) -> None:
        """Deliver every later event to ``url``, signed with ``secret`` (None: stop)."""
        with self._lock:
            self.webhook_url, self.webhook_secret = url, secret

    def deliver(self, event: dict[str, Any], attempts: int = 3) -> int:
        """POST ``event`` to the webhook endpoint, signed, as Stripe does; returns the status.

        Non-2xx answers are retried (``attempts`` in all) after a short pause; every attempt is
        recorded in ``deliveries()``."""
        import httpx

        url, secret = self.webhook_url, self.webhook_secret
        if not url or not secret:
            raise RuntimeError("no webhook endpoint configured (set_webhook)")
        status = 0
        for attempt in range(attempts):
            body, headers = webhook_request(event, secret)
            try:
                status = httpx.post(url, content=body, headers=headers, timeout=30.0).status_code
            except httpx.HTTPError:
                status = 0
            with self._lock:
                self._deliveries.append(
                    {"event": event["id"], "type": event["type"], "status": status}
                )
            if 200 <= status < 300:
                break
            time.sleep(0.2 * (attempt + 1))
        return status

    def deliveries(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._deliveries)

    def add_draft_invoice(
        self,
        customer_id: str,
        period_start: int,
        period_end: int,
        *,
        billing_reason: str = "subscription_cycle",
        emit: bool = True,
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """A draft invoice for ``customer_id`` (no subscription lines) and, with ``emit``, its
        ``invoice.created`` event: for tests that do not run a test clock."""
        with self._lock:
            customer = self._customer(customer_id, "customer")
            invoice = self._new_invoice(
                customer["id"],
                "usd",
                created=period_end,
                period=(period_start, period_end),
                billing_reason=billing_reason,
                subscription=None,
                lines=[],
            )
            event = self.add_event("invoice.created", invoice, created=period_end) if emit else None
            return copy.deepcopy(invoice), event

    def expire_idempotency_keys(self) -> None:
        """Forget every stored response, as Stripe does after 24 hours."""
        with self._lock:
            self._idempotency_store.clear()

    def finalize_invoice(self, invoice_id: str) -> dict[str, Any]:
        with self._lock:
            invoice = self._invoice(invoice_id)
            self._finalize(invoice)
            return copy.deepcopy(invoice)

    def invoices(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(list(self._invoices.values()))

    def invoiceitems(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(list(self._invoiceitems.values()))

    def products(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(list(self._products.values()))

    # events

    def _list_events(self, *, params: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
        in_range = self._created_filter(params)
        patterns: list[str] = []
        if params.get("type"):
            patterns.append(params["type"])
        types = params.get("types")
        if types:
            patterns.extend(types if isinstance(types, list) else [types])
        items = [
            e
            for e in reversed(self._events)
            if in_range(e["created"])
            and (not patterns or any(fnmatch.fnmatchcase(e["type"], p) for p in patterns))
        ]
        return self._list(items, params, "/v1/events")

    def _get_event(
        self, event_id: str, *, params: dict[str, Any], ctx: dict[str, Any]
    ) -> dict[str, Any]:
        for event in self._events:
            if event["id"] == event_id:
                return copy.deepcopy(event)
        raise _missing("event", event_id)


# -- webhooks ------------------------------------------------------------------------------


def sign_payload(payload: bytes | str, secret: str, timestamp: int | None = None) -> str:
    """A ``Stripe-Signature`` header value for ``payload``, exactly Stripe's v1 scheme:
    ``t=<timestamp>,v1=<hex HMAC-SHA256(secret, "<timestamp>.<payload>")>``."""
    body = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
    t = int(time.time()) if timestamp is None else int(timestamp)
    mac = hmac.new(secret.encode("utf-8"), f"{t}.".encode() + body, hashlib.sha256)
    return f"t={t},v1={mac.hexdigest()}"


def event_payload(event: dict[str, Any]) -> bytes:
    """A webhook body for ``event`` (pretty-printed JSON, as Stripe sends it)."""
    return json.dumps(event, indent=2).encode("utf-8")


def webhook_request(
    event: dict[str, Any], secret: str, timestamp: int | None = None
) -> tuple[bytes, dict[str, str]]:
    """Body and headers to POST ``event`` to a webhook endpoint, signed with ``secret``."""
    body = event_payload(event)
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "Stripe-Signature": sign_payload(body, secret, timestamp),
        "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
    }
    return body, headers


# -- app -----------------------------------------------------------------------------------


def create_app(state: StripeState | None = None) -> FastAPI:
    """The fake's ASGI app; ``app.state.stripe`` is its ``StripeState``."""
    fake = state if state is not None else StripeState()
    app = FastAPI(
        title="Stripe API fake (meterbridge local stand-in)", docs_url=None, redoc_url=None
    )
    app.state.stripe = fake

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.api_route("/v1/{rest:path}", methods=["GET", "POST", "DELETE"])
    async def api(request: Request, rest: str) -> Response:
        pairs = parse_qsl(request.url.query, keep_blank_values=True)
        if request.method == "POST":
            media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
            raw = await request.body()
            if raw and media_type not in ("application/x-www-form-urlencoded", ""):
                err = StripeError(
                    400,
                    f"Invalid request: unsupported Content-Type {media_type}. "
                    "If error persists and you need assistance, please contact support.",
                )
                return JSONResponse(err.body(), status_code=400)
            pairs += parse_qsl(raw.decode("utf-8"), keep_blank_values=True)
        params = decode_form(pairs)
        params.pop("expand", None)
        headers = {k.lower(): v for k, v in request.headers.items()}
        status, body, extra = fake.handle(request.method, request.url.path, params, headers)
        return JSONResponse(body, status_code=status, headers=extra)

    @app.get("/_control/faults")
    async def get_faults() -> dict[str, Any]:
        return {"faults": fake.faults()}

    @app.post("/_control/faults")
    async def post_faults(request: Request) -> Response:
        try:
            spec = json.loads(await request.body() or b"{}")
            if not isinstance(spec, dict):
                raise ValueError("body must be a JSON object")
            return JSONResponse(fake.configure(spec))
        except (ValueError, TypeError) as exc:
            return JSONResponse(
                {"error": {"type": "invalid_request_error", "message": str(exc)}}, status_code=400
            )

    @app.post("/_control/events")
    async def post_event(request: Request) -> Response:
        try:
            spec = json.loads(await request.body())
            if (
                not isinstance(spec, dict)
                or not isinstance(spec.get("type"), str)
                or not isinstance(spec.get("object"), dict)
            ):
                raise ValueError('body must be {"type": str, "object": {...}}')
            event = fake.add_event(
                spec["type"],
                spec["object"],
                previous_attributes=spec.get("previous_attributes"),
                created=spec.get("created"),
            )
            return JSONResponse(event)
        except (ValueError, TypeError) as exc:
            return JSONResponse(
                {"error": {"type": "invalid_request_error", "message": str(exc)}}, status_code=400
            )

    @app.get("/_control/state")
    async def get_state() -> dict[str, Any]:
        return {
            "customers": fake.customers(),
            "prices": fake.prices(),
            "subscriptions": fake.subscriptions(),
            "events": fake.events(),
            "products": fake.products(),
            "invoices": fake.invoices(),
            "invoiceitems": fake.invoiceitems(),
            "deliveries": fake.deliveries(),
        }

    @app.post("/_control/webhook")
    async def post_webhook(request: Request) -> Response:
        spec = json.loads(await request.body() or b"{}")
        if not isinstance(spec, dict):
            return JSONResponse(
                {"error": {"type": "invalid_request_error", "message": "body must be an object"}},
                status_code=400,
            )
        fake.set_webhook(spec.get("url"), spec.get("secret"))
        return JSONResponse({"url": spec.get("url")})

    @app.get("/_control/idempotency_keys")
    async def get_keys() -> dict[str, Any]:
        return {"keys": [{"method": m, "path": p, "key": k} for m, p, k in fake.idempotency_keys()]}

    @app.get("/_control/requests")
    async def get_requests() -> dict[str, Any]:
        return {"requests": fake.requests()}

    @app.post("/_control/reset")
    async def reset() -> dict[str, Any]:
        fake.reset()
        return {"reset": True}

    return app


def main(argv: list[str] | None = None) -> None:
    from meterbridge_dev.stack.servers import serve_until_signalled

    parser = argparse.ArgumentParser(
        prog="python -m meterbridge_dev.fakes.stripe_fake",
        description="Fake Stripe HTTP API with fault injection",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--api-key", default=None, help="the only accepted secret key (none: any sk_/rk_ key)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for generated ids")
    parser.add_argument("--strict-prices", action="store_true", help="reject unknown price ids")
    args = parser.parse_args(argv)
    state = StripeState(args.api_key, seed=args.seed, strict_prices=args.strict_prices)
    serve_until_signalled(create_app(state), args.host, args.port)


if __name__ == "__main__":
    main()
