"""Runs in Table Storage on Azurite: rows spread over bucket partitions, lists newest first from one
partition (or a few, in key order), and runs stored by schema 2 (one partition `run`) still read,
in lists and by id, until `admin migrate` has moved them."""

from __future__ import annotations

import json
from dataclasses import replace

from shared.adapters.run_table import LEGACY, TableRunRepository
from shared.domain.runs import Run
from shared.domain.vocabulary import RunStatus, Trigger


def _runs(store: TableRunRepository, count: int, tasks: int = 10, status: RunStatus = RunStatus.SUCCEEDED,
          ) -> list[Run]:
    return [Run(run_id=run_id, status=status, trigger=Trigger.MANUAL, task=f"task{n % tasks}",
                output_images=[f"localhost:5000/app{n % tasks}:{run_id}"])
            for n, run_id in enumerate(store.allocate(count))]


def _partitions(store: TableRunRepository) -> set[str]:
    return {e["PartitionKey"] for e in store.table.list_entities(select=["PartitionKey"])}


def _store_as_schema_2(store: TableRunRepository, run: Run) -> None:
    """The rows schema 2 wrote for a run: all in the partition `run`, in one transaction."""
    inv = store.ids.inverted(run.run_id)
    keys = [f"id|{inv}"] + ([f"task|{run.task}|{inv}"] if run.task else [])
    if run.status != RunStatus.QUEUED:
        keys += [f"image|{image.replace('/', '%2F')}|{inv}" for image in run.output_images]
    store.table.submit_transaction([("upsert", {
        "PartitionKey": LEGACY, "RowKey": key, "SchemaVersion": 2, "Status": str(run.status),
        "OutputImage": run.output_images[0] if run.output_images else "",
        "Data": json.dumps(run.to_record())}) for key in keys])


def test_a_waves_runs_spread_over_partitions_and_list_newest_first(services):
    store = services.runs
    runs = _runs(store, 300)
    store.create_many(runs)
    partitions = _partitions(store)
    assert len({p for p in partitions if p.startswith("run|")}) == 4  # blocks of 100 ids
    assert {p for p in partitions if p.startswith("task|")} == {store._task_partition(f"task{n}")
                                                                for n in range(10)}
    newest, continuation = store.newest(top=15)
    assert [r.run_id for r in newest] == [r.run_id for r in reversed(runs)][:15]
    older, _ = store.newest(top=15, after=continuation)
    assert [r.run_id for r in older] == [r.run_id for r in reversed(runs)][15:30]
    of_task, _ = store.newest(top=15, task="task3")
    assert [r.run_id for r in of_task] == [r.run_id for r in reversed(runs) if r.task == "task3"][:15]
    assert store.producer_of(runs[7].output_images[0]).run_id == runs[7].run_id


def test_a_list_reads_an_unfinished_run_from_its_own_row(services):
    # A change whose copies were never written (the process died between the two writes).
    store = services.runs
    (run,) = _runs(store, 1, status=RunStatus.QUEUED)
    store.create_many([run])
    current, _ = store.get(run.run_id)
    own = store._rows(replace(current, status=RunStatus.RUNNING, attempt=1))[0]
    store.table.update_entity(own)  # the run's own row only
    listed, _ = store.newest(top=1)
    assert listed[0].status == RunStatus.RUNNING
    by_task, _ = store.newest(top=1, task=run.task, status=RunStatus.QUEUED)
    assert by_task == []  # the copy says Queued; the run no longer is


def test_runs_stored_by_schema_2_still_read_and_move_when_changed_or_migrated(services):
    store = services.runs
    old = _runs(store, 30, tasks=3)
    for run in old:
        _store_as_schema_2(store, run)
    new = _runs(store, 5, tasks=3)
    store.create_many(new)
    # Lists merge the old partition in, newest first.
    listed, _ = store.newest(top=15)
    assert [r.run_id for r in listed] == [r.run_id for r in reversed(old + new)][:15]
    of_task, _ = store.newest(top=15, task="task1")
    assert [r.run_id for r in of_task] == [r.run_id for r in reversed(old + new) if r.task == "task1"][:15]
    # A read by id moves the run; a change is written to the moved run.
    first, etag = store.get(old[0].run_id)
    store.save(replace(first, reason="changed after the move"), etag)
    assert store.get(old[0].run_id)[0].reason == "changed after the move"
    # `admin migrate` moves the rest and leaves the old partition empty; again, it finds nothing.
    report = store.migrate_legacy()
    assert report.runs == 29
    assert list(store.table.query_entities("PartitionKey eq @pk", parameters={"pk": LEGACY})) == []
    assert store.migrate_legacy().runs == 0
    assert store.get(old[0].run_id)[0].reason == "changed after the move"  # not set back
    listed, _ = store.newest(top=40)
    assert [r.run_id for r in listed] == [r.run_id for r in reversed(old + new)]
    assert len(store.in_status(RunStatus.SUCCEEDED)) == 35


def test_lists_of_every_run_read_a_window_of_the_newest_blocks(services, monkeypatch):
    store = services.runs
    older = _runs(store, 10)
    store.allocate(1000)  # ids handed out whose runs were never written
    runs = older + _runs(store, 700)
    store.create_many(runs)
    newest = [r.run_id for r in reversed(runs)]
    assert [r.run_id for r in store.newest(top=15)[0]] == newest[:15]  # where the window starts
    sent: list[dict] = []
    query = store.table.query_entities

    def recorded(query_filter, **kwargs):
        sent.append(kwargs.get("parameters") or {})
        return query(query_filter, **kwargs)

    monkeypatch.setattr(store.table, "query_entities", recorded)
    # Runs made since the last list are in the window (it is open above), and a page needs only the
    # blocks down to a few hundred runs below where it starts.
    later = _runs(store, 250)
    store.create_many(later)
    newest = [r.run_id for r in reversed(runs + later)]
    page, continuation = store.newest(top=15)
    assert [r.run_id for r in page] == newest[:15]
    assert sent[0]["pkhi"] != "run}" and len(sent) == 1
    page, _ = store.newest(top=15, after=continuation)
    assert [r.run_id for r in page] == newest[15:30]
    assert sent[1]["pkhi"] != "run}"
    # Where the window holds too few (the ids never written), the whole range answers.
    tail, _ = store.newest(top=15, after=newest[-12])
    assert [r.run_id for r in tail] == newest[-11:]
    assert sent[-1]["pkhi"] == "run}"
