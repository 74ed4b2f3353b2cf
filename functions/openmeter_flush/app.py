"""Lambda entry point of the scheduled OpenMeter flush (EventBridge). No FastAPI."""

from meterbridge.runtime.init_phase import InitPhase

# The cold-start measures, installed here (docs/performance/cold_start.md): no cyclic GC during
# init, the X-Ray SDK only where tracing is on, the settings read so a missing variable fails
# the init, naming it.
with InitPhase():
    from aws_lambda_powertools.logging import correlation_paths
    from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent, event_source
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from meterbridge.logic import flush
    from meterbridge.observability import logger, metrics, tracer
    from meterbridge.settings import get_settings

    tracer.install()
    get_settings()


@logger.inject_lambda_context(correlation_id_path=correlation_paths.EVENT_BRIDGE, clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
@event_source(data_class=EventBridgeEvent)
def lambda_handler(event: EventBridgeEvent, context: LambdaContext) -> dict:
    return flush.run(context.get_remaining_time_in_millis)
