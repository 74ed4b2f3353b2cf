"""Reconciliation: apply Stripe events the webhook missed, through the same idempotent path.

Stripe keeps events for 30 days. Events listed by the API need no signature check (they come
from Stripe over TLS with our key); each one goes through ``logic.stripe.apply.process``, so an
event already handled is acknowledged without effects and a missed one is applied exactly once.
Events are applied oldest first (the API lists newest first), though the ordering guards would
also make any order end right.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel

from meterbridge.errors import MeterbridgeError, ValidationFailed
from meterbridge.logic.stripe.apply import process
from meterbridge.logic.stripe.translate import unhandled
from meterbridge.logic.stripe.verify import parse_event
from meterbridge.observability import logger
from meterbridge.settings import Settings, get_settings
from meterbridge_dev.stripe.events import StripeEvents

MAX_SINCE_S = 30 * 24 * 3600
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class ReconcileSummary(BaseModel):
    listed: int = 0
    applied: int = 0
    already_done: int = 0
    ignored: int = 0
    unmatched: int = 0
    in_flight: int = 0
    failed: int = 0
    failed_ids: list[str] = []


def parse_since(text: str) -> int:
    """``30d``, ``12h``, ``90m`` or ``3600s`` (a bare number is seconds) to seconds."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text)
    if not match:
        raise ValidationFailed(f"invalid duration {text!r}; use e.g. 30d, 12h, 90m")
    seconds = int(match.group(1)) * _UNITS[match.group(2) or "s"]
    if seconds <= 0:
        raise ValidationFailed("the duration must be positive")
    return min(seconds, MAX_SINCE_S)


def reconcile(
    events: Iterable[dict[str, Any]], settings: Settings | None = None
) -> ReconcileSummary:
    """Run each listed event (any order) through the webhook's idempotent path, oldest first."""
    settings = settings or get_settings()
    listed = sorted(events, key=lambda e: (int(e.get("created", 0)), str(e.get("id", ""))))
    summary = ReconcileSummary(listed=len(listed))
    for raw in listed:
        if unhandled(raw):  # as the webhook does: not a billing event, whatever its shape
            summary.ignored += 1
            continue
        try:
            result = process(parse_event(raw), settings, wait_s=0.0)
        except MeterbridgeError as exc:
            # One bad event must not stop the rest; it is reported and a re-run retries it.
            logger.warning(
                "reconcile could not apply an event",
                extra={"stripe_event_id": raw.get("id"), "error": exc.code},
            )
            summary.failed += 1
            summary.failed_ids.append(str(raw.get("id")))
            continue
        if result.outcome == "applied":
            summary.applied += 1
        elif result.outcome == "duplicate":
            summary.already_done += 1
        elif result.outcome == "ignored":
            summary.ignored += 1
        elif result.outcome == "unmatched":
            summary.unmatched += 1
        else:
            summary.in_flight += 1
    return summary


def reconcile_since(since_s: int, settings: Settings | None = None) -> ReconcileSummary:
    """List the account's events of the last ``since_s`` seconds and reconcile them."""
    settings = settings or get_settings()
    if not settings.stripe_api_key:
        raise ValidationFailed("STRIPE_API_KEY is not set")
    source = StripeEvents(settings.stripe_api_key, settings.stripe_api_base)
    return reconcile(source.since(int(time.time()) - since_s), settings)
