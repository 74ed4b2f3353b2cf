"""Lambda entry point of the usage API (API Gateway HTTP API -> Mangum -> FastAPI)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from meterbridge.init_phase import InitPhase

if TYPE_CHECKING:  # pragma: no cover
    # Only the annotation needs it; importing it costs the cold start about 0.5 ms.
    from aws_lambda_powertools.utilities.typing import LambdaContext

with InitPhase():  # no cyclic GC while the app is built; what it built is frozen after
    from aws_lambda_powertools.logging import correlation_paths
    from mangum import Mangum

    from meterbridge.api.usage import create_app
    from meterbridge.observability import logger, metrics, tracer

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
