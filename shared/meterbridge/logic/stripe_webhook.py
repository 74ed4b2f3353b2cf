"""Stripe webhook handling: verify, dedupe, translate, apply tenant state (issue 6)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meterbridge.errors import NotImplementedYet


def handle(raw_body: bytes, headers: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
    """Process one webhook delivery; returns the HTTP status and JSON body for Stripe."""
    raise NotImplementedYet("the Stripe webhook is not available yet")
