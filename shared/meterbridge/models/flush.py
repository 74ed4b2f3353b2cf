"""One OpenMeter flush run: its tuning and its result (docs/flush.md)."""

from typing import Literal

from pydantic import BaseModel, Field

from meterbridge.settings import Settings

StopReason = Literal["deadline", "openmeter_unavailable", "openmeter_misconfigured", "storage"]


class FlushConfig(BaseModel):
    """Tuning of one run. ``from_settings`` is what the Lambda uses; tests shorten the times."""

    batch_size: int = Field(100, ge=1, le=1000)
    lease_s: float = Field(90.0, gt=0)
    send_budget_s: float = Field(40.0, gt=0)
    safety_ms: int = Field(5000, ge=0)
    concurrency: int = Field(4, ge=1, le=64)
    db_workers: int = Field(8, ge=1, le=64)
    # Segments per page query (DynamoDB also stops a page at 1 MB).
    page_size: int = Field(50, ge=1, le=1000)
    # Events per claim group: one claim and one mark transaction per group, its segments
    # POSTed in batches of up to ``batch_size`` events.
    group_events: int = Field(400, ge=1, le=10_000)
    republish_limit: int = Field(2000, ge=0)
    shard_leases: bool = True
    # Records per GetRecords call (DynamoDB Streams returns at most 1,000 and 1 MB).
    stream_page: int = Field(1000, ge=1, le=1000)
    # Items per recovery Scan page (DynamoDB also stops a page at 1 MB).
    recovery_page: int = Field(1000, ge=1, le=10_000)

    @classmethod
    def from_settings(cls, settings: Settings) -> "FlushConfig":
        # The lease covers the longest a batch may take: its send budget (every retry and
        # backoff of one batch) plus the marks; it expires well within two schedule ticks.
        budget = max(settings.openmeter_timeout_s * 3, 30.0)
        # FLUSH_CONCURRENCY is read when the settings model has it (docs/flush.md).
        concurrency = settings.flush_concurrency
        return cls(
            batch_size=settings.flush_batch_size,
            send_budget_s=budget,
            lease_s=budget * 2,
            concurrency=concurrency,
        )


class FlushResult(BaseModel):
    sent: int = 0
    retried: int = 0
    dead_lettered: int = 0
    remaining: int = 0
    duration_ms: int = 0
    republished: int = 0
    # OpenMeter ingest requests that failed (retried, refused, or given up on).
    failed_requests: int = 0
    # Events moved from the stream into backlog items while OpenMeter could not take them.
    parked: int = 0
    # Events read back from their records for a stream gap (delivered or parked), and the
    # gaps still open after the run (docs/flush.md#when-the-stream-trimmed-a-checkpoint).
    recovered: int = 0
    recovering: int = 0
    stopped: StopReason | None = None
