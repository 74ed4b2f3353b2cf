"""Lambda entry point of the admin API (API Gateway HTTP API, IAM auth -> Mangum -> FastAPI)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from meterbridge.runtime.init_phase import InitPhase

if TYPE_CHECKING:  # pragma: no cover
    # Only the annotation needs it; importing it costs the cold start about 0.5 ms.
    from aws_lambda_powertools.utilities.typing import LambdaContext

# The cold-start measures, installed here and nowhere else (docs/performance/cold_start.md):
# no cyclic GC while the app is built, and what it built frozen after; FastAPI's v1 probe
# before any route is declared; the X-Ray SDK only where tracing is on; the settings read, so a
# missing variable fails the init, naming it.
with InitPhase():
    from meterbridge.runtime import fastapi_probe

    fastapi_probe.install()
    from aws_lambda_powertools.logging import correlation_paths
    from mangum import Mangum

    from meterbridge.api.admin import create_app
    from meterbridge.observability import logger, metrics, tracer
    from meterbridge.settings import get_settings

    tracer.install()
    get_settings()
    app = create_app()
    _asgi = Mangum(app, lifespan="off")


@logger.inject_lambda_context(
    correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True
)
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    # Powertools' and Mangum's LambdaContext types describe the same runtime object.
    return _asgi(event, context)  # type: ignore[arg-type]
