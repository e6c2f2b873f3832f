"""Writes of one entity on Azurite: sent as the plain call, not as a one-entity transaction (whose
multipart body is most of a small write's client CPU), with the same effect and the same races."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from shared.adapters.dependency_table import TableDependencyTable, to_entity
from shared.domain.dependencies import DependencyRow
from shared.domain.runs import Run
from shared.domain.vocabulary import RunStatus, Trigger, TriggerType

BASE = "localhost:5000/base:1"


def _count_transactions(table: Any) -> list[int]:
    """Count the table client's transactions (instance attribute: the real call still goes out)."""
    sent: list[int] = []
    submit = table.submit_transaction

    def counted(operations: Any, **kwargs: Any) -> Any:
        sent.append(len(list(operations)))
        return submit(operations, **kwargs)

    table.submit_transaction = counted
    return sent


def test_a_queued_run_is_recorded_without_a_transaction(services):
    store = services.runs
    (run_id,) = store.allocate(1)
    sent = _count_transactions(store.table)
    store.create_many([Run(run_id=run_id, status=RunStatus.QUEUED, trigger=Trigger.MANUAL, task="app",
                           output_images=[f"localhost:5000/app:{run_id}"])])
    assert sent == []  # its own row and its task copy, each alone in its partition
    run, _ = store.get(run_id)
    assert run.status == RunStatus.QUEUED
    listed, _ = store.newest(task="app")
    assert [r.run_id for r in listed] == [run_id]


def test_a_lone_claim_is_etag_guarded_without_a_transaction(services):
    index = TableDependencyTable(services.storage)
    index.table.upsert_entity(to_entity(DependencyRow(
        base=BASE, task="app", runtime=True, trigger_enabled=True, trigger_type=TriggerType.RUNTIME,
        images=["app:{{.Run.ID}}"], built_digest="sha256:" + "0" * 64)))
    (first,) = index.dependents(BASE)
    (second,) = index.dependents(BASE)  # a concurrent delivery read the same row
    sent = _count_transactions(index.table)
    won, lost = index.claim([replace(first, pending_run_id="da1")])
    assert (len(won), lost) == (1, [])
    won, lost = index.claim([replace(second, pending_run_id="da2")])
    assert (won, len(lost)) == ([], 1)  # its etag is stale: the race is lost, as in a transaction
    assert sent == []
    (stored,) = index.dependents(BASE)
    assert stored.pending_run_id == "da1"
