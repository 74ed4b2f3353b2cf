"""What ``meterbridge status`` shows, and the gauges the flush emits (logic/status.py)."""

from pydantic import BaseModel, Field, computed_field


class RecoveryWindow(BaseModel):
    """A stream gap the flush is filling from the event records (docs/flush.md)."""

    shard: str
    accepted_from: str
    accepted_to: str
    opened_at: str
    scanned: int
    recovered: int


class OutboxStatus(BaseModel):
    pending: int
    oldest_pending_at: str | None = None
    oldest_pending_age_s: float | None = None
    oldest_pending_tenant: str | None = None
    # Open stream gaps: events in them are not in ``pending`` (their count is unknown until
    # the Scan ends), so the outbox is not healthy while any is open.
    recovery: list[RecoveryWindow] = Field(default_factory=list)


class OutboxGauges(BaseModel):
    """What the flush emits after each run: ``OutboxOldestAgeSeconds`` and ``DeadLetters``."""

    oldest_pending_age_s: float
    dead_letters: int


class LastFlush(BaseModel):
    finished_at: str
    sent: int = 0
    retried: int = 0
    dead_lettered: int = 0
    remaining: int = 0
    republished: int = 0
    duration_ms: int = 0
    stopped: str | None = None
    openmeter_breaker: str | None = None
    age_s: float | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        return self.stopped in (None, "deadline")


class Breakers(BaseModel):
    openmeter: str | None = Field(None, description="as the last flush run saw it")
    nats: str | None = Field(None, description="from the streaming task's /metrics")
    nats_error: str | None = None


class TenantUsage(BaseModel):
    tenant_id: str
    meter: str
    used: int


class Status(BaseModel):
    checked_at: str
    period: str
    outbox: OutboxStatus
    dead_letters: int
    last_flush: LastFlush | None = None
    breakers: Breakers
    top_tenants: list[TenantUsage]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def healthy(self) -> bool:
        """False when an alarm would fire: old backlog, dead letters, failed flush, open breaker."""
        old = (self.outbox.oldest_pending_age_s or 0) > 300
        flush_failed = self.last_flush is not None and not self.last_flush.ok
        open_breaker = "open" in (self.breakers.openmeter, self.breakers.nats)
        recovering = bool(self.outbox.recovery)
        return not (old or self.dead_letters or flush_failed or open_breaker or recovering)
