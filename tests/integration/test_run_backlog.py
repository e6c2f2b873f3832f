"""A big wave's backlog on Azurite (shared.adapters.run_backlog, run_table.create_absent, and
shared.service_layer.run_life): the push answers with the cap's worth recorded, every dependent is
listed at once, redeliveries and newer pushes make nothing twice, and recording the backlog never
turns back a run that moved on."""

from __future__ import annotations

from dataclasses import replace

from shared.bootstrap import Services
from shared.domain.builds import BuildResult
from shared.domain.messages import decode
from shared.domain.runs import Run
from shared.domain.vocabulary import Outcome, RunStatus, Trigger, WaveState
from shared.domain.waves import Member
from tests.integration.test_dispatch import NEW, NEWER, add_dependents, push, queued_run_ids

N = 130  # above run_life.BACKLOG_ABOVE


def test_the_backlog_blob_round_trips_and_lists(services):
    backlog = services.lifecycle._backlog
    runs = [Run(run_id=f"da{n}", status=RunStatus.QUEUED, trigger=Trigger.IMAGE_UPDATE, task=f"t{n}",
                wave_id="w7", released=False) for n in range(1, 4)]
    assert backlog.get("w7") == [] and backlog.waves() == []
    backlog.put("w7", runs)
    assert backlog.waves() == ["w7"] and [r.run_id for r in backlog.get("w7")] == ["da1", "da2", "da3"]
    backlog.remove("w7")
    backlog.remove("w7")  # gone already: no error
    assert backlog.waves() == []
    member = Member("w7", "t1", "da1", 1, needed_by=["t2"])
    backlog.put("w7", runs, [member])
    assert backlog.get_record("w7").members == [member] and len(backlog.get("w7")) == 3
    backlog.remove("w7")


def test_create_absent_keeps_a_run_that_moved_on(services):
    store = services.runs
    (run_id, other) = store.allocate(2)
    queued = Run(run_id=run_id, status=RunStatus.QUEUED, trigger=Trigger.IMAGE_UPDATE, task="app",
                 released=False)
    store.create_absent([queued])
    current, etag = store.get(run_id)
    store.save(replace(current, status=RunStatus.RUNNING, released=True), etag)
    fresh = Run(run_id=other, status=RunStatus.QUEUED, trigger=Trigger.IMAGE_UPDATE, task="app")
    store.create_absent([queued, fresh])  # the late insert of the first, and a new one
    assert store.get(run_id)[0].status == RunStatus.RUNNING
    assert {r.run_id: r.status for r in store.newest(task="app")[0]} == \
        {run_id: RunStatus.RUNNING, other: RunStatus.QUEUED}


def test_a_big_push_lists_every_dependent_before_its_backlog_is_recorded(services, monkeypatch):
    monkeypatch.setattr(services.lifecycle, "record_in_background", lambda wave_id: None)
    add_dependents(services, N)
    decision = services.dispatcher.handle(push())
    assert decision.outcome == Outcome.QUEUED and len(decision.runs) == N
    cap = services.settings.brakes.wave_max_running
    recorded, _ = services.runs.newest(top=1000)
    assert len(recorded) == cap, "the push recorded more than it released before answering"
    listed, _ = services.lifecycle.reads.newest(top=1000)
    assert sorted(r.run_id for r in listed) == sorted(decision.runs)
    assert services.lifecycle.reads.newest(task="app129")[0][0].status == RunStatus.QUEUED
    # A redelivery, and a newer push: nothing twice, no new message, no id spent.
    again = services.dispatcher.handle(push(event_id=decision.event_id))
    newer = services.dispatcher.handle(push(NEWER))
    assert again.runs == decision.runs and newer.runs == []
    assert {t.outcome for t in newer.tasks} == {Outcome.COALESCED}
    assert len(queued_run_ids(services)) == cap
    assert services.runs.allocate(1) == [f"da{N + 1}"]
    # Housekeeping records what the background never did; once, whatever runs again.
    services.lifecycle.sweep()
    services.lifecycle.sweep()
    recorded, _ = services.runs.newest(top=1000)
    assert sorted(r.run_id for r in recorded) == sorted(decision.runs)
    assert services.lifecycle._backlog.waves() == []
    assert NEW in (recorded[0].cause or "")


def test_a_big_wave_answers_before_its_members_are_written_and_builds_every_run(services, monkeypatch):
    """The push writes only the released members; another process (a worker, which never saw
    the backlog) records it when its first run ends, and the wave builds each run once."""
    monkeypatch.setattr(services.lifecycle, "record_in_background", lambda wave_id: None)
    add_dependents(services, N)
    decision = services.dispatcher.handle(push())
    cap = services.settings.brakes.wave_max_running
    wave_id = services.runs.get(decision.runs[0])[0].wave_id
    assert wave_id is not None and len(decision.runs) == N
    assert len(services.waves.waves.members(wave_id)) == cap, "members written before the answer"
    listed, _ = services.lifecycle.reads.newest(top=1000)
    assert sorted(r.run_id for r in listed) == sorted(decision.runs)
    assert {r.status for r in listed} == {RunStatus.QUEUED}

    worker_process = Services(services.settings)
    worker = worker_process.worker
    worker._build = lambda run, cancel: worker._finish(  # type: ignore[method-assign]
        run, BuildResult(RunStatus.SUCCEEDED, output_digest="sha256:" + "2" * 64))
    queue = services.storage.queue(services.settings.build_queue)
    built: list[str] = []
    for _ in range(4 * N):  # a bound, not a clock: every round takes at least one message
        messages = list(queue.receive_messages(max_messages=32, visibility_timeout=120))
        if not messages:
            break
        for message in messages:
            if worker.execute(decode(message.content)) is not None:
                built.append(decode(message.content))
            queue.delete_message(message)
    assert sorted(built) == sorted(decision.runs), "a run was built twice, or never"
    assert services.lifecycle._backlog.waves() == []
    assert len(services.waves.waves.members(wave_id)) == N
    assert services.waves.waves.get(wave_id)[0].state == WaveState.DONE
    assert {r.status for r in services.runs.newest(top=1000)[0]} == {RunStatus.SUCCEEDED}
