"""``meterbridge status`` against the moto server: backlog, oldest age, dead letters, last flush,
breakers and top tenants, seeded through the outbox DAL the product itself uses."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from typer.testing import CliRunner

from meterbridge.dal import dynamo, outbox
from meterbridge.dal.outbox import stream
from meterbridge.logic import status as status_logic
from meterbridge.models.cloudevent import CloudEvent, usage_source
from meterbridge.models.flush import FlushResult
from meterbridge.settings import get_settings
from meterbridge_dev.cli.main import app

runner = CliRunner()


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _pending(tenant: str, event_id: str, accepted_at: datetime) -> str:
    """One event accepted into the outbox (its record: an INSERT in the stream), the way
    writers do."""
    event = CloudEvent(id=event_id, source=usage_source(tenant), type="api.call", data={"n": 1})
    item = outbox.outbox_item(
        event, tenant_id=tenant, kind="usage", nats_pending=False, accepted_at=_iso(accepted_at)
    )
    ops = outbox.put_ops(get_settings().events_table, [item])
    dynamo.client().transact_write_items(TransactItems=ops)  # type: ignore[arg-type]
    return item["pk"]


def _dead(tenant: str, event_id: str) -> None:
    """A dead letter: an event OpenMeter rejected, the stream read past it by a flush run."""
    settings = get_settings()
    table = settings.events_table
    pk = _pending(tenant, event_id, datetime.now(UTC))
    assert outbox.dead_letter(table, pk, error='{"status": 400}', dead_at=_iso(datetime.now(UTC)))
    _checkpoint_at_the_end()


def _checkpoint_at_the_end() -> None:
    """What a flush run leaves: every stream shard's checkpoint at its last record."""
    settings = get_settings()
    arn = stream.stream_arn(settings.events_table)
    assert arn is not None
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    for shard in stream.shards(arn):
        args = (settings.idempotency_table, settings.events_table, shard.shard_id)
        checkpoint = stream.acquire(*args, owner="test-run", now_ms=now_ms, lease_ms=60_000)
        assert checkpoint is not None
        it, last = stream.iterator(arn, shard.shard_id, checkpoint.seq), checkpoint.seq
        while it is not None:
            records, it = stream.read(it)
            if not records:
                break
            last = stream.sequence(records[-1])
        assert stream.commit(*args, owner="test-run", seq=last, now_ms=now_ms, lease_ms=60_000)
        stream.release(*args, owner="test-run")


def _usage(tenant: str, meter: str, shards: list[int], period: str) -> None:
    for n, value in enumerate(shards):
        dynamo.update(
            get_settings().usage_table,
            {"pk": f"{tenant}#{period}#{meter}", "sk": f"SHARD#{n}"},
            set_="ADD #c :v",
            names={"#c": "count"},
            vals={":v": value},
        )


def test_status_shows_backlog_oldest_age_dead_letters_and_top_tenants(aws: dict[str, str]) -> None:
    # Given three pending events, the oldest accepted 10 minutes ago, and two dead letters
    now = datetime.now(UTC)
    _dead("t_cccc", "d1")
    _dead("t_cccc", "d2")
    _pending("t_aaaa", "e1", now - timedelta(minutes=10))
    _pending("t_bbbb", "e2", now - timedelta(minutes=1))
    _pending("t_bbbb", "e3", now)
    # And usage counters this period (sharded) and last period
    period = status_logic.current_period(now)
    _usage("t_big", "events", [700, 500], period)
    _usage("t_small", "events", [5], period)
    _usage("t_old", "events", [99_999], "1999-01")
    # And a recorded flush run that stopped because OpenMeter was down
    status_logic.record_flush(
        FlushResult(sent=3, remaining=3, stopped="openmeter_unavailable"), openmeter_breaker=1
    )

    # When the operator runs `meterbridge status --json`
    result = runner.invoke(app, ["status", "--json"])

    # Then it reports all of it and exits 1 (attention needed)
    assert result.exit_code == 1, result.output
    report = json.loads(result.output)
    assert report["outbox"]["pending"] == 3
    assert report["outbox"]["oldest_pending_tenant"] == "t_aaaa"
    assert 590 <= report["outbox"]["oldest_pending_age_s"] <= 900
    assert report["dead_letters"] == 2
    assert report["last_flush"]["stopped"] == "openmeter_unavailable"
    assert report["last_flush"]["ok"] is False
    assert report["breakers"]["openmeter"] == "open"
    assert [(r["tenant_id"], r["used"]) for r in report["top_tenants"]] == [
        ("t_big", 1200),
        ("t_small", 5),
    ]
    assert report["healthy"] is False


def test_status_text_report_of_an_empty_system_is_ok(aws: dict[str, str]) -> None:
    # Given empty tables and a healthy last flush
    status_logic.record_flush(FlushResult(sent=0), openmeter_breaker=0)

    # When the operator runs `meterbridge status`
    result = runner.invoke(app, ["status"])

    # Then it says OK and exits 0
    assert result.exit_code == 0, result.output
    assert "overall:        OK" in result.output
    assert "outbox pending: 0" in result.output
    assert "dead letters:   0" in result.output
    assert "openmeter closed" in result.output
    assert "(no usage recorded)" in result.output


def test_outbox_gauges_for_the_flush(aws: dict[str, str]) -> None:
    # Given one event pending for 6 minutes and one dead letter
    now = datetime.now(UTC)
    _dead("t_aaaa", "d1")
    _pending("t_aaaa", "e1", now - timedelta(minutes=6))

    # When the flush asks for its gauges
    gauges = status_logic.outbox_gauges(now=now)

    # Then the oldest age is past the 5-minute alarm threshold and the dead letter counted
    assert 355 <= gauges.oldest_pending_age_s <= 365
    assert gauges.dead_letters == 1


def test_nats_breaker_is_read_from_the_streaming_metrics() -> None:
    # Given a Prometheus exposition from a streaming task
    text = "# TYPE meterbridge_nats_circuit_state gauge\nmeterbridge_nats_circuit_state 1.0\n"

    # When the status parses it
    # Then the breaker is open; a half-open one reads half_open; none is None
    assert status_logic.nats_breaker_from_metrics(text) == "open"
    assert status_logic.nats_breaker_from_metrics(text.replace("1.0", "2.0")) == "half_open"
    assert status_logic.nats_breaker_from_metrics("other_metric 1\n") is None


def test_status_reads_the_nats_breaker_from_a_streaming_task(aws: dict[str, str]) -> None:
    # Given a process serving meterbridge's /metrics with the NATS breaker open
    from fastapi import FastAPI

    from meterbridge_dev.stack.servers import BackgroundServer
    from meterbridge_streaming.health_routes import router
    from meterbridge_streaming.metrics import NATS_CIRCUIT_STATE

    served = FastAPI()
    served.include_router(router)
    NATS_CIRCUIT_STATE.set(1)
    try:
        with BackgroundServer(served) as server:
            # When the operator points status at it
            result = runner.invoke(app, ["status", "--json", "--streaming-url", server.url])
    finally:
        NATS_CIRCUIT_STATE.set(0)

    # Then the breaker shows open and the status asks for attention
    assert result.exit_code == 1, result.output
    assert json.loads(result.output)["breakers"]["nats"] == "open"
