"""The streaming routes (``GET /v1/stream``, ``POST /v1/stream-tokens``): see meterbridge.streaming.

An app that includes ``router`` must run ``stream_lifespan(app)`` inside its own lifespan:
it starts the NATS bridge and the fan-out and drains them at shutdown.
"""

from __future__ import annotations

from meterbridge.streaming.app import router, stream_lifespan

__all__ = ["router", "stream_lifespan"]
