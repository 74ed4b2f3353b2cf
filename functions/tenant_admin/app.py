"""Lambda entry point of the admin API (API Gateway HTTP API, IAM auth -> Mangum -> FastAPI)."""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    # Only the annotation needs it; importing it costs the cold start about 0.5 ms.
    from aws_lambda_powertools.utilities.typing import LambdaContext

# Init phase without the cyclic garbage collector: nearly everything the imports and the app
# build below allocate lives as long as the process, so collections during init only scan
# live objects (30-50 ms of a cold start here). Afterwards the init objects are frozen
# (moved out of the collector's generations), so no collection rescans them later: the
# work is not moved to the first request. docs/performance/cold_start.md.
_gc_was_enabled = gc.isenabled()
gc.disable()
try:
    from aws_lambda_powertools.logging import correlation_paths
    from mangum import Mangum

    from meterbridge.api.admin import create_app
    from meterbridge.observability import logger, metrics, tracer

    app = create_app()
    _asgi = Mangum(app, lifespan="off")
finally:
    gc.freeze()
    if _gc_was_enabled:
        gc.enable()


@logger.inject_lambda_context(
    correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True
)
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    # Powertools' and Mangum's LambdaContext types describe the same runtime object.
    return _asgi(event, context)  # type: ignore[arg-type]
