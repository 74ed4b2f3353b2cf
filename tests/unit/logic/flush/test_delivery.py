"""Flush delivery (logic/flush/delivery.py): packing, and the bisection of a refused batch,
against an in-memory OpenMeter and dead-letter store."""

from __future__ import annotations

import json
import time

from meterbridge.logic.flush.config import Run
from meterbridge.logic.flush.delivery import Deliverer, Delivery, packed
from meterbridge.models.flush import FlushConfig
from meterbridge.models.outbox import Segment
from tests.support.fakes.outbox import FakeOpenMeter, FakeOutbox

SOURCE = "meterbridge/usage/t-flush"


def _events(n: int) -> list[str]:
    return [json.dumps({"id": f"e{i}", "source": SOURCE, "type": "api.call"}) for i in range(n)]


def _deliverer(client: FakeOpenMeter, outbox: FakeOutbox, **config: int) -> tuple[Run, Deliverer]:
    run = Run(
        config=FlushConfig(**config),
        request_timeout_s=client.timeout_s,
        remaining_ms=None,
        clock=time.time,
    )
    return run, Deliverer(run, client, outbox)  # type: ignore[arg-type]


def _segment(key: str, count: int) -> Segment:
    return Segment(key=key, events=tuple(_events(count)), count=count)


def test_segments_pack_into_runs_of_whole_segments() -> None:
    # Given segments of 60, 30, 20, 150 and 10 events
    segments = [_segment(k, n) for k, n in [("a", 60), ("b", 30), ("c", 20), ("d", 150), ("e", 10)]]

    # When they are packed into runs of up to 100 events
    runs = [[s.key for s in run] for run in packed(segments, 100)]

    # Then each run is consecutive, never splits a segment, and a larger one stands alone
    assert runs == [["a", "b"], ["c"], ["d"], ["e"]]


def test_a_refused_batch_is_halved_until_the_poison_event_stands_alone() -> None:
    # Given eight events, the sixth of which OpenMeter refuses
    client, outbox = FakeOpenMeter(poison={"e5"}), FakeOutbox()
    run, deliverer = _deliverer(client, outbox)
    delivery = Delivery([])

    # When they are delivered as one batch
    deliverer.deliver(_events(8), time.monotonic() + 30, delivery)

    # Then every other event reached OpenMeter, once, and the poison one is dead-lettered
    assert sorted(client.received) == sorted(f"e{i}" for i in range(8) if i != 5)
    assert set(outbox.dead) == {(SOURCE, "e5")}
    assert json.loads(outbox.dead[(SOURCE, "e5")])["status"] == 400
    assert delivery.acked == 7
    # And the halves were: 8 (refused), 4 (sent), 4, 2, 1 (sent), 1 (poison), 2 (sent)
    assert [len(b) for b in client.batches] == [8, 4, 4, 2, 1, 1, 2]
    assert run.result.dead_lettered == 1 and run.result.failed_requests == 4
    assert outbox.dead_count == 1


def test_a_dead_letter_already_there_is_not_counted_twice() -> None:
    # Given a poison event dead-lettered by an earlier run that died before its commit
    client, outbox = FakeOpenMeter(poison={"e0"}), FakeOutbox()
    outbox.dead[(SOURCE, "e0")] = "{}"
    run, deliverer = _deliverer(client, outbox)

    # When it is delivered again
    deliverer.deliver(_events(1), time.monotonic() + 30, Delivery([]))

    # Then it is neither dead-lettered nor counted again
    assert run.result.dead_lettered == 0 and outbox.dead_count == 0


def test_send_posts_batches_of_the_batch_size_and_reports_them_all_handled() -> None:
    # Given 250 events, one of them poison, and batches of 100 sent two at a time
    client, outbox = FakeOpenMeter(poison={"e123"}), FakeOutbox()
    run, deliverer = _deliverer(client, outbox, batch_size=100, concurrency=2)
    assert run.config.concurrency == 2

    # When they are sent
    acked, failed = deliverer.send(_events(250), "t-flush")

    # Then 249 were acknowledged, none left undelivered, and the poison one dead-lettered
    assert (acked, failed) == (249, [])
    assert len(client.received) == 249
    assert set(outbox.dead) == {(SOURCE, "e123")}
    # And the first POSTs were 100, 100 and 50 events; only the refused one was halved
    assert sorted(len(b) for b in client.batches)[-3:] == [50, 100, 100]
    assert len(client.batches) == 3 + 2 * 7  # 100 -> 50 -> 25 -> 13 -> 7 -> 4 -> 2 -> 1


def test_a_stopped_run_leaves_its_batches_unsent() -> None:
    # Given a run that has stopped (OpenMeter unavailable)
    client, outbox = FakeOpenMeter(), FakeOutbox()
    run, deliverer = _deliverer(client, outbox, batch_size=10)
    run.stop_run("openmeter_unavailable")

    # When it is asked to send
    acked, failed = deliverer.send(_events(25), None)

    # Then nothing is sent and every event is handed back for parking
    assert acked == 0 and len(failed) == 25 and client.batches == []
