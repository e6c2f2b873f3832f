"""Run records: the stored shape round-trips, and rows of the first schema still read."""

from datetime import UTC, datetime

from shared.adapters.run_table import TableRunRepository, _from_entity
from shared.domain.builds import BuildSpec, Source
from shared.domain.runs import Run
from shared.domain.vocabulary import RunStatus, Trigger

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


class _NoStorage:
    pass


def test_record_round_trip_keeps_every_field():
    run = Run(run_id="da7", status=RunStatus.RUNNING, trigger=Trigger.IMAGE_UPDATE, task="app",
              cause="r/b:1@sha256:x", created_at=T0, started_at=T0, heartbeat_at=T0,
              output_images=["r/app:da7"], base_digests={"r/b:1": "sha256:x"}, attempt=2,
              spec=BuildSpec(Source(upload="da7-x.tar.gz"), dockerfile="D", build_args={"A": "1"}),
              force=True, builder_run_id="cb7")
    assert Run.from_record(run.to_record()) == run


def test_rows_stored_before_the_builder_run_id_read_it_as_none():
    record = Run(run_id="da9", status=RunStatus.RUNNING, trigger=Trigger.MANUAL).to_record()
    del record["builder_run_id"]
    assert Run.from_record(record).builder_run_id is None


def test_a_row_a_newer_version_wrote_still_reads():
    """A rolling deploy: an instance of this version reads runs an instance of the next one wrote."""
    record = Run(run_id="da10", status=RunStatus.QUEUED, trigger=Trigger.MANUAL).to_record()
    record["field_of_a_later_version"] = {"anything": 1}
    assert Run.from_record(record).run_id == "da10"


def test_a_quick_build_spec_stored_before_it_was_typed_still_reads():
    record = Run(run_id="da8", status=RunStatus.QUEUED, trigger=Trigger.MANUAL).to_record()
    record["spec"] = {"context_blob": "da8-1.tar.gz", "dockerfile": "D", "build_args": {},
                      "platform": "linux"}
    assert Run.from_record(record).spec == BuildSpec(Source(upload="da8-1.tar.gz"), dockerfile="D")


def test_rows_are_lean_and_carry_the_filter_properties():
    store = TableRunRepository(_NoStorage(), "da")  # type: ignore[arg-type]
    queued = Run(run_id="da7", status=RunStatus.QUEUED, trigger=Trigger.MANUAL, task="app",
                 output_images=["r/app:da7"])
    rows = store._rows(queued)
    assert [(r["PartitionKey"], r["RowKey"]) for r in rows] == [
        ("run|9999999999", "id|999999999993"), (store._task_partition("app"), "task|app|999999999993")]
    assert set(rows[0]) == {"PartitionKey", "RowKey", "SchemaVersion", "Status", "OutputImage", "Data"}
    started = store._rows(Run(run_id="da7", status=RunStatus.RUNNING, trigger=Trigger.MANUAL,
                              output_images=["r/app:da7"]))
    assert [r["RowKey"] for r in started] == ["id|999999999993", "image|r%2Fapp:da7|999999999993"]
    assert _from_entity(rows[1]) == queued


def test_run_rows_spread_by_block_of_ids_and_by_task_and_newer_blocks_list_first():
    store = TableRunRepository(_NoStorage(), "da")  # type: ignore[arg-type]
    assert len({store._home(f"da{n}")[0] for n in range(1, 10001)}) == 101  # a wave of 10,000
    assert len({store._task_partition(f"task{n}") for n in range(200)}) == 32
    assert store._block("da100") < store._block("da99") == store._block("da1")


def test_schema_1_rows_still_read():
    entity = {"RunId": "da1", "Status": "Succeeded", "Trigger": "Manual", "Task": "", "Platform": "Linux",
              "CreatedAt": T0.isoformat(), "StartedAt": T0.isoformat(), "FinishedAt": "",
              "OutputImages": '["r/app:da1"]', "BaseDigests": "{}", "Attempt": 1, "Spec": "{}"}
    run = _from_entity(entity)
    assert (run.run_id, run.task, run.started_at, run.finished_at) == ("da1", None, T0, None)
    assert run.output_images == ["r/app:da1"] and run.attempt == 1
    assert run.status == RunStatus.SUCCEEDED and run.spec is None and run.builder_run_id is None
