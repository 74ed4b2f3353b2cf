"""The floor with the cold-start measures of ``meterbridge.runtime`` that any handler can take.

``floor_handler.py`` built inside ``InitPhase`` (no cyclic GC during init, its objects frozen
after) with FastAPI's pydantic.v1 probe installed first, as each of our FastAPI handlers does
(docs/performance/cold_start.md): what our handlers would cost with nothing of ours but those
measures. Their distance above it is ours (Powertools, settings, models, routes, our DAL).
"""

from meterbridge.runtime.init_phase import InitPhase

with InitPhase():
    from meterbridge.runtime import fastapi_probe

    fastapi_probe.install()
    from bench.cold_start.floor_handler import lambda_handler

__all__ = ["lambda_handler"]
