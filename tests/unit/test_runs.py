"""Run records: the stored shape round-trips, and rows of the first schema still read."""

from datetime import UTC, datetime

from shared.runs import QUEUED, RUNNING, Run, RunStore

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


class _NoStorage:
    pass


def test_record_round_trip_keeps_every_field():
    run = Run(run_id="da7", status=RUNNING, trigger="Image Update", task="app", cause="r/b:1@sha256:x",
              created_at=T0, started_at=T0, heartbeat_at=T0, output_images=["r/app:da7"],
              base_digests={"r/b:1": "sha256:x"}, attempt=2, spec={"dockerfile": "D"}, force=True)
    assert Run.from_record(run.to_record()) == run


def test_rows_are_lean_and_carry_the_filter_properties():
    store = RunStore(_NoStorage(), "da")
    queued = Run(run_id="da7", status=QUEUED, trigger="Manual", task="app", output_images=["r/app:da7"])
    rows = store._rows(queued)
    assert [r["RowKey"] for r in rows] == ["id|999999999993", "task|app|999999999993"]
    assert set(rows[0]) == {"PartitionKey", "RowKey", "SchemaVersion", "Status", "OutputImage", "Data"}
    started = store._rows(Run(run_id="da7", status=RUNNING, trigger="Manual", output_images=["r/app:da7"]))
    assert [r["RowKey"] for r in started] == ["id|999999999993", "image|r%2Fapp:da7|999999999993"]
    assert RunStore._from_entity(rows[1]) == queued


def test_schema_1_rows_still_read():
    entity = {"RunId": "da1", "Status": "Succeeded", "Trigger": "Manual", "Task": "", "Platform": "Linux",
              "CreatedAt": T0.isoformat(), "StartedAt": T0.isoformat(), "FinishedAt": "",
              "OutputImages": '["r/app:da1"]', "BaseDigests": "{}", "Attempt": 1, "Spec": "{}"}
    run = RunStore._from_entity(entity)
    assert (run.run_id, run.task, run.started_at, run.finished_at) == ("da1", None, T0, None)
    assert run.output_images == ["r/app:da1"] and run.attempt == 1
