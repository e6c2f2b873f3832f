"""A big push's index-row claims written after it answered, on Azurite (issue 15, item 3): the
claims wait in the wave's backlog blob (shared.adapters.run_backlog), every dispatch of the base
shows them on the rows it reads, and they are written afterwards where they still stand
(shared.service_layer.dependencies.write_deferred). A second push of another digest right after
the first makes no run twice and sends nothing twice, whether it comes before the claims are
written or while they are being written."""

from __future__ import annotations

import threading

from shared.adapters.dependency_table import to_entity
from shared.adapters.storage import chunks
from shared.domain.dependencies import DependencyRow
from shared.domain.vocabulary import Outcome, TriggerType
from tests.integration.test_dispatch import BASE, NEW, NEWER, OLD, push, queued_run_ids

N = 150  # above run_life.BACKLOG_ABOVE


def seed(services, count: int = N) -> None:
    """Index rows written in transactions of 100, as bench/fanout.py seeds them."""
    rows = [to_entity(DependencyRow(base=BASE, task=f"app{n:03d}", runtime=True, trigger_enabled=True,
                                    trigger_type=TriggerType.RUNTIME, images=[f"app{n:03d}:{{{{.Run.ID}}}}"],
                                    built_digest=OLD))
            for n in range(count)]
    table = services.storage.table("dependencies")
    for batch in chunks(rows):
        table.submit_transaction([("upsert", entity) for entity in batch])


def dispatch_state(services) -> dict[str, tuple[str | None, str | None]]:
    return {row.task: (row.pending_run_id, row.triggered_digest)
            for row in services.index.dependents(BASE)}


def test_a_second_digest_before_the_claims_are_written_coalesces_and_they_are_written_after(
        services, monkeypatch):
    monkeypatch.setattr(services.lifecycle, "record_in_background", lambda wave_id: None)
    seed(services)
    first = services.dispatcher.handle(push(NEW))
    assert first.outcome == Outcome.QUEUED and len(first.runs) == N
    assert set(dispatch_state(services).values()) == {(None, None)}, "claims written before the answer"
    (wave_id,) = services.lifecycle._backlog.waves()
    assert len(services.lifecycle._backlog.get_record(wave_id).claims) == N
    second = services.dispatcher.handle(push(NEWER))
    assert second.runs == [] and {t.outcome for t in second.tasks} == {Outcome.COALESCED}
    cap = services.settings.brakes.wave_max_running
    assert len(queued_run_ids(services)) == cap
    assert services.runs.allocate(1) == [f"da{N + 1}"], "a dispatch burnt run ids"
    # Housekeeping writes the claims where they still stand: the coalesce wrote each row already
    # (its run, the newer digest), so each keeps that; a redelivery of either push makes nothing.
    services.lifecycle.sweep()
    assert services.lifecycle._backlog.waves() == []
    assert sorted(dispatch_state(services).values()) == sorted((run_id, NEWER) for run_id in first.runs)
    for digest in (NEW, NEWER):
        again = services.dispatcher.handle(push(digest))
        assert again.runs == [] and Outcome.QUEUED not in {t.outcome for t in again.tasks}


def test_two_digests_pushed_at_once_make_one_run_per_task(services):
    seed(services)
    decisions = {}

    def deliver(digest: str) -> None:
        decisions[digest] = services.dispatcher.handle(push(digest))

    threads = [threading.Thread(target=deliver, args=(digest,)) for digest in (NEW, NEWER)]
    for thread in threads:  # the second right after the first: it waits for the base's hold
        thread.start()
    for thread in threads:
        thread.join()
    services.lifecycle.sweep()  # whatever the background has not written yet
    made = [run_id for decision in decisions.values() for run_id in decision.runs]
    assert len(made) == N, f"{len(made)} runs for {N} tasks"
    (maker,) = [d for d in decisions.values() if d.runs]
    (other,) = [d for d in decisions.values() if not d.runs]
    assert {t.outcome for t in other.tasks} == {Outcome.COALESCED}
    assert len(queued_run_ids(services)) == services.settings.brakes.wave_max_running
    assert {pending for pending, _ in dispatch_state(services).values()} == set(maker.runs)
    assert {digest for _, digest in dispatch_state(services).values()} == {other.digest}
