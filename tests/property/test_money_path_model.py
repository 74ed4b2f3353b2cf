"""A stateful model of the money path: ingest, flush, client retries and crashes, interleaved.

Hypothesis drives the real code against real servers: DynamoDB is the moto server over HTTP
(fresh tables per state machine run, built from template.yaml), OpenMeter is the loopback sink
with its fault injection. The model is just sets and counters: which (tenant, id) pairs were
accepted, how many per meter, which ids were posted in an answer that may have been lost.

Invariants, after every step:
- the outbox holds every accepted event exactly once, and nothing else: one dedupe record
  each, and each queued by exactly one INSERT in the table's stream;
- the usage counters equal the accepted counts per tenant and meter;
- OpenMeter holds no event that was not accepted; every event behind a committed stream
  checkpoint (and not parked in a backlog item) is in OpenMeter;
- the flush runs' ``sent`` totals equal the events so delivered (nothing is counted twice);
- an event reached OpenMeter twice only after an answer that may have been lost (a run
  killed between the POST and the checkpoint commit, or a stored-then-500 answer).
At the end, after a clean flush once every lease has expired: OpenMeter's distinct
(source, id) set equals the accepted set exactly, and every event is delivered.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from meterbridge.adapters.openmeter import OpenMeterClient, RetryPolicy, reset_client
from meterbridge.dal import dynamo
from meterbridge.dal import usage as usage_dal
from meterbridge.dal.outbox import backlog, stream
from meterbridge.logic import flush, ingest
from meterbridge.logic.periods import period_of
from meterbridge.models.cloudevent import usage_source
from meterbridge.models.flush import FlushConfig, FlushResult
from meterbridge.plans import catalog
from meterbridge.resilience import CircuitBreaker
from meterbridge.settings import Settings
from meterbridge_dev.fakes.openmeter_sink import Fault, SinkState, create_app
from meterbridge_dev.stack.servers import BackgroundServer
from meterbridge_dev.stack.tables import create_tables
from tests.support.builders import events_table_items

API_KEY = "om_property_model_key"
LEASE_S = 30.0
# Two plans: Basic (soft limits, sharded counters) and Free (hard limits, one capped counter).
# Free's "query" meter (limit 100) is left out so no run reaches a threshold or the quota.
TENANTS = {"basic": ("api.call", "query", "tokens.used"), "free": ("api.call", "tokens.used")}
ID_POOL = 40  # ids are drawn from a small pool, so repeats and cross-tenant reuse are common


class Killed(BaseException):
    """The Lambda dies: nothing after this point of the run executes (not an ``Exception``,
    so no ``except Exception`` in the flush can swallow it)."""


class MoneyPathModel(RuleBasedStateMachine):
    """One run: fresh tables, a reset sink, two tenants, a clock that only moves forward."""

    sink: ClassVar[SinkState]
    sink_url: ClassVar[str]

    def __init__(self) -> None:
        super().__init__()
        suffix = uuid.uuid4().hex[:8]
        logical = ("TenantsTable", "EventsTable", "UsageTable", "IdempotencyTable")
        self.tables = {lid: f"mbp-{lid.removesuffix('Table').lower()}-{suffix}" for lid in logical}
        create_tables(dynamo.client(), self.tables)
        self.settings = Settings(
            TENANTS_TABLE=self.tables["TenantsTable"],
            EVENTS_TABLE=self.tables["EventsTable"],
            USAGE_TABLE=self.tables["UsageTable"],
            IDEMPOTENCY_TABLE=self.tables["IdempotencyTable"],
            OPENMETER_ENABLED=True,
            OPENMETER_BASE_URL=self.sink_url,
            OPENMETER_API_KEY=API_KEY,
            NATS_ENABLED=False,
        )
        self.sink.reset()
        self.now = datetime.now(UTC)  # ingest's "now": one billing period for the whole run
        self.skew_s = 0.0  # the flush clock runs ahead of wall time once leases must expire
        self.tenants = {plan: f"t_{plan}_{suffix}" for plan in TENANTS}
        self.accepted: dict[str, set[str]] = {plan: set() for plan in TENANTS}
        self.meter_counts: dict[str, Counter[str]] = {plan: Counter() for plan in TENANTS}
        self.requests: list[tuple[str, list[dict[str, Any]]]] = []
        self.ambiguous: set[tuple[str, str]] = set()  # posted; the answer may have been lost
        self.sent_total = 0  # FlushResult.sent summed over every run that returned
        # Events a killed run still holds leases on, with their OpenMeter count at the kill:
        # nobody may send them again until the lease runs out.
        self.held: dict[tuple[str, str], int] = {}

    # -- helpers --------------------------------------------------------------------------

    def clock(self) -> float:
        return time.time() + self.skew_s

    def client(self, attempts: int = 4) -> OpenMeterClient:
        return OpenMeterClient(
            self.sink_url,
            API_KEY,
            timeout_s=30.0,  # a timeout would be a lost answer the model did not plan
            retry=RetryPolicy(max_attempts=attempts, backoff_base_s=0.005, backoff_cap_s=0.02),
            breaker=CircuitBreaker("openmeter-model", failure_threshold=50, reset_timeout_s=0.1),
        )

    def run_flush(self, **config: Any) -> FlushResult:
        options: dict[str, Any] = {"batch_size": 7, "lease_s": LEASE_S, "send_budget_s": 10.0}
        client = self.client(config.pop("attempts", 4))
        try:
            result = flush.flush_outbox(
                None,
                settings=self.settings,
                config=FlushConfig(**{**options, **config}),
                client=client,
                publisher=SimpleNamespace(enabled=False),
                clock=self.clock,
            )
        finally:
            client.close()
        self.sent_total += result.sent
        return result

    def event(self, plan: str, number: int) -> dict[str, Any]:
        # The type follows from the id, so a retried event is the same event.
        types = TENANTS[plan]
        return {"id": f"ev-{number}", "type": types[number % len(types)], "data": {"n": number}}

    def submit(self, plan: str, body: list[dict[str, Any]]) -> None:
        """POST a batch through ingest and check its answer against the model."""
        fresh = list(dict.fromkeys(e["id"] for e in body if e["id"] not in self.accepted[plan]))
        result, stored, alerts = ingest.ingest(
            self.tenants[plan], plan, body, settings=self.settings, now=self.now
        )
        assert (result.accepted, result.duplicates) == (len(fresh), len(body) - len(fresh))
        assert sorted(e.id for e in stored) == sorted(fresh)
        assert alerts == []
        source = usage_source(self.tenants[plan])
        assert {e.source for e in stored} <= {source}
        for event_id in fresh:
            self.accepted[plan].add(event_id)
            number = int(event_id.removeprefix("ev-"))
            meter = catalog().meter_for_type(self.event(plan, number)["type"])
            self.meter_counts[plan][meter] += 1
        self.requests.append((plan, body))

    def expected_keys(self) -> set[tuple[str, str]]:
        return {
            (usage_source(self.tenants[plan]), event_id)
            for plan, ids in self.accepted.items()
            for event_id in ids
        }

    @contextlib.contextmanager
    def killed_after_post(self) -> Iterator[None]:
        """Every batch dies right after OpenMeter acknowledged it (before its checkpoint
        commit, or the delete of its backlog item)."""
        real_commit, real_delivered = stream.commit, backlog.delivered

        def die(*args: Any, **kwargs: Any) -> bool:
            raise Killed()

        stream.commit = die  # type: ignore[assignment]
        backlog.delivered = die  # type: ignore[assignment]
        try:
            yield
        finally:
            stream.commit = real_commit  # type: ignore[assignment]
            backlog.delivered = real_delivered  # type: ignore[assignment]

    def recorded_since(self, first_event: int, ids: set[str] | None = None) -> set[tuple[str, str]]:
        """(source, id) of the events OpenMeter recorded since ``first_event`` (of ``ids``)."""
        return {
            (e["source"], e["id"])
            for e in self.sink.events()[first_event:]
            if ids is None or e["id"] in ids
        }

    # -- rules: ingest --------------------------------------------------------------------

    @rule(
        plan=st.sampled_from(sorted(TENANTS)),
        numbers=st.lists(st.integers(0, ID_POOL - 1), min_size=1, max_size=8),
    )
    def ingest_batch(self, plan: str, numbers: list[int]) -> None:
        # Small pool: the batch mixes new ids, repeats inside it and ids accepted earlier
        self.submit(plan, [self.event(plan, n) for n in numbers])

    @precondition(lambda self: bool(self.requests))
    @rule(data=st.data())
    def client_retries_a_request(self, data: st.DataObject) -> None:
        # The client never saw the answer to an earlier request and sends it again, whole
        plan, body = data.draw(st.sampled_from(self.requests))
        self.submit(plan, body)

    @rule(plan=st.sampled_from(sorted(TENANTS)), numbers=st.lists(st.integers(0, 60), max_size=6))
    def two_clients_race_the_same_ids(self, plan: str, numbers: list[int]) -> None:
        # Two requests with the same events at the same moment: each id is accepted by one
        body = [self.event(plan, n) for n in [*numbers, ID_POOL]]
        fresh = {e["id"] for e in body} - self.accepted[plan]
        results: list[Any] = []
        barrier = threading.Barrier(2)

        def post() -> None:
            barrier.wait()
            results.append(
                ingest.ingest(self.tenants[plan], plan, body, settings=self.settings, now=self.now)
            )

        threads = [threading.Thread(target=post) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(results) == 2
        stored = [e.id for _, events, _ in results for e in events]
        assert sorted(stored) == sorted(fresh)
        assert sum(r.accepted for r, _, _ in results) == len(fresh)
        for event_id in fresh:
            self.accepted[plan].add(event_id)
            meter = catalog().meter_for_type(body[[e["id"] for e in body].index(event_id)]["type"])
            self.meter_counts[plan][meter] += 1
        self.requests.append((plan, body))

    # -- rules: flush ---------------------------------------------------------------------

    @rule(shard_leases=st.booleans())
    def flush_runs_to_completion(self, shard_leases: bool) -> None:
        result = self.run_flush(shard_leases=shard_leases)
        assert result.stopped is None and result.dead_lettered == 0

    def pending(self) -> bool:
        """Accepted events not yet marked sent: the flush faults only matter with some."""
        return self.sent_total < sum(len(ids) for ids in self.accepted.values())

    @precondition(pending)
    @rule(concurrency=st.sampled_from([1, 2]))
    def flush_killed_between_post_and_mark(self, concurrency: int) -> None:
        # A Lambda dies after OpenMeter stored a batch and before the mark
        first = len(self.sink.events())
        with self.killed_after_post(), contextlib.suppress(Killed):
            self.run_flush(concurrency=concurrency)
        killed = self.recorded_since(first)
        self.ambiguous |= killed
        counts = self.sink.counts()
        self.held.update({key: counts[key] for key in killed})

    @precondition(pending)
    @rule()
    def openmeter_stores_then_answers_500(self) -> None:
        # The acknowledgement is lost: the client retries, OpenMeter holds a re-send
        first_event, first_request = len(self.sink.events()), len(self.sink.requests())
        self.sink.script("record_then_fail")
        result = self.run_flush()
        self.sink.clear_faults()
        lost = {
            i
            for r in self.sink.requests()[first_request:]
            if r["fault"] == "record_then_fail"
            for i in r["ids"]
        }
        self.ambiguous |= self.recorded_since(first_event, lost)
        assert result.dead_lettered == 0

    @precondition(pending)
    @rule(
        kind=st.sampled_from(["error", "throttle", "unavailable"]),
        times=st.one_of(st.integers(1, 5), st.none()),
    )
    def openmeter_faults_for_one_run(self, kind: str, times: int | None) -> None:
        # A few 500/429/503 answers (retried), or OpenMeter down for the whole run (released)
        if times is None:
            self.sink.set_probabilities(**{kind: 1.0})
        else:
            self.sink.script(*[Fault(kind, retry_after=0)] * times)
        result = self.run_flush(attempts=3)
        self.sink.clear_faults()
        assert result.dead_lettered == 0
        if times is None and result.stopped is not None:
            assert result.stopped == "openmeter_unavailable" and result.sent == 0

    @precondition(pending)
    @rule(shard_leases=st.booleans())
    def two_flushes_overlap(self, shard_leases: bool) -> None:
        results: list[FlushResult] = []
        errors: list[BaseException] = []
        barrier = threading.Barrier(2)

        def one_run() -> None:
            barrier.wait()
            try:
                results.append(self.run_flush(concurrency=2, shard_leases=shard_leases))
            except BaseException as exc:  # surfaced below, in the test's thread
                errors.append(exc)

        threads = [threading.Thread(target=one_run) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert errors == [] and len(results) == 2

    @rule()
    def leases_expire(self) -> None:
        # Time passes: the leases of killed runs run out and their events can be claimed again
        self.skew_s += LEASE_S + 1
        self.held.clear()

    # -- invariants -----------------------------------------------------------------------

    def queued_and_delivered(
        self,
    ) -> tuple[Counter[tuple[str, str]], Counter[tuple[str, str]]]:
        """What the stream queued, and what the flush delivered: behind a committed checkpoint
        and not parked in a backlog item."""
        events, ledger_table = self.settings.events_table, self.settings.idempotency_table
        arn = stream.stream_arn(events)
        assert arn is not None
        queued: Counter[tuple[str, str]] = Counter()
        committed: Counter[tuple[str, str]] = Counter()
        for shard in stream.shards(arn):
            checkpoint = dynamo.get(
                ledger_table, {"pk": f"FLUSH#{events}#STREAM#{shard.shard_id}", "sk": "CHECKPOINT"}
            )
            upto = int((checkpoint or {}).get("seq") or 0)
            it = stream.iterator(arn, shard.shard_id, None)
            while it is not None:
                records, it = stream.read(it)
                if not records:
                    break
                for record in records:
                    for q in stream.queued(record):
                        wire = json.loads(q.event)
                        queued[(wire["source"], wire["id"])] += 1
                        if int(stream.sequence(record)) <= upto:
                            committed[(wire["source"], wire["id"])] += 1
        parked = Counter(
            (json.loads(e)["source"], json.loads(e)["id"])
            for item in backlog.page(ledger_table, events, limit=1000)
            for e in str(item["events"]).split("\n")
        )
        return queued, committed - parked

    @invariant()
    def outbox_holds_each_accepted_event_once(self) -> None:
        records, segments = events_table_items(self.settings.events_table)
        # One dedupe record per accepted event, each queued once by its stream INSERT
        records_keys = Counter(
            (json.loads(i["event"])["source"], json.loads(i["event"])["id"]) for i in records
        )
        assert set(records_keys) == self.expected_keys()
        assert all(n == 1 for n in records_keys.values())
        assert segments == []
        queued, delivered = self.queued_and_delivered()
        assert set(queued) == self.expected_keys()
        assert all(n == 1 for n in queued.values())
        # Delivered only after OpenMeter acknowledged it; each delivery counted by one run
        assert set(delivered) <= self.sink.unique_keys()
        assert sum(delivered.values()) == self.sent_total

    @invariant()
    def openmeter_holds_nothing_unaccepted_and_resends_only_after_lost_answers(self) -> None:
        assert self.sink.unique_keys() <= self.expected_keys()
        assert set(self.sink.resent()) <= self.ambiguous
        counts = self.sink.counts()
        assert {k: counts[k] for k in self.held} == self.held, "re-sent under a live lease"

    @invariant()
    def usage_counters_equal_accepted_counts(self) -> None:
        period = period_of(self.now)
        for plan, tenant in self.tenants.items():
            for meter in catalog().meters:
                used = usage_dal.used(self.settings.usage_table, tenant, period, meter)
                assert used == self.meter_counts[plan][meter], (plan, meter)

    # -- the end --------------------------------------------------------------------------

    def teardown(self) -> None:
        try:
            # Given every lease expired and OpenMeter healthy, a clean final flush
            self.sink.clear_faults()
            self.skew_s += LEASE_S + 1
            for _ in range(5):
                if self.run_flush().remaining == 0:
                    break
            # Then: OpenMeter holds exactly the accepted events, each delivered once
            assert self.sink.unique_keys() == self.expected_keys()
            _, delivered = self.queued_and_delivered()
            assert set(delivered) == self.expected_keys()
            total = sum(delivered.values())
            assert total == self.sent_total == len(self.expected_keys())
            self.usage_counters_equal_accepted_counts()
        finally:
            for name in self.tables.values():
                with contextlib.suppress(Exception):
                    dynamo.client().delete_table(TableName=name)


@pytest.fixture
def model_servers(moto_server: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The moto server (shared) and one OpenMeter sink on loopback for the whole model."""
    from tests.support.fixtures import reset_singletons

    state = SinkState(API_KEY, seed=7, retry_after=0, hang_seconds=0.5)
    with BackgroundServer(create_app(state)) as server:
        monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.url)
        reset_singletons()
        reset_client()
        MoneyPathModel.sink = state
        MoneyPathModel.sink_url = server.url
        yield
    reset_client()


def test_money_path_model(model_servers: None) -> None:
    # Given the real ingest and flush against the moto server and the OpenMeter sink
    # When hypothesis interleaves ingest, retries, flushes, crashes, faults and overlaps
    # Then the invariants hold after every step and at the end (see the module docstring)
    run_state_machine_as_test(
        MoneyPathModel,
        settings=settings(
            max_examples=15,
            stateful_step_count=12,
            deadline=None,
            derandomize=True,
            database=None,
            # No shrinking: each replay runs real servers, so a failure is reported as found
            # (its whole step sequence) instead of minimised for minutes.
            phases=[Phase.explicit, Phase.reuse, Phase.generate],
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
