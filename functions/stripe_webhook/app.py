"""Lambda entry point of the Stripe webhook (Function URL). No FastAPI: Powertools only."""

import base64
import json

from meterbridge.runtime.init_phase import InitPhase

# The cold-start measures, installed here (docs/performance/cold_start.md): no cyclic GC during
# init, the X-Ray SDK only where tracing is on, the settings read so a missing variable fails
# the init, naming it.
with InitPhase():
    from aws_lambda_powertools.logging import correlation_paths
    from aws_lambda_powertools.utilities.data_classes import LambdaFunctionUrlEvent, event_source
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from meterbridge.errors import MeterbridgeError
    from meterbridge.logic.stripe import webhook
    from meterbridge.observability import logger, metrics, tracer
    from meterbridge.settings import get_settings

    tracer.install()
    get_settings()


def _response(status: int, body: dict) -> dict:
    return {
        "statusCode": status,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(body),
    }


@logger.inject_lambda_context(
    correlation_id_path=correlation_paths.LAMBDA_FUNCTION_URL, clear_state=True
)
@metrics.log_metrics
@tracer.capture_lambda_handler
@event_source(data_class=LambdaFunctionUrlEvent)
def lambda_handler(event: LambdaFunctionUrlEvent, context: LambdaContext) -> dict:
    raw = event.get("body") or ""
    # The signature covers the exact bytes Stripe sent: decode, never re-serialise.
    body = base64.b64decode(raw) if event.is_base64_encoded else raw.encode("utf-8")
    try:
        status, payload = webhook.handle(body, event.headers or {})
    except MeterbridgeError as exc:
        status, payload = exc.status, exc.body()
    return _response(status, payload)
