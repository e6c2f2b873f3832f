"""A big wave answers its push before its waiting runs are recorded (shared.service_layer.run_life):
they go to the wave's backlog, one record, and are recorded from it afterwards. Meanwhile every
reader still sees a pending run per dependent, deliveries again make nothing twice, and whatever
needs a run of the backlog (a release, a cancel, housekeeping) records it first."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from shared.domain.events import ImagePushed
from shared.domain.vocabulary import EventSource, Outcome, RunStatus, WaveState
from shared.domain.waves import Brakes
from tests.fakes import FakeApp
from tests.unit.test_waves import REGISTRY, add_task, play

N = 150  # above run_life.BACKLOG_ABOVE


def push_event(name: str, digest: str, event_id: str) -> ImagePushed:
    return ImagePushed(event_id, REGISTRY, name, "latest", digest, datetime.now(UTC),
                       EventSource.DISTRIBUTION)


def big_wave_app(tmp_path, monkeypatch) -> FakeApp:
    """N tasks FROM one base, caps of 3; the background recording never comes (the process
    stopped right after the push answered) unless a test runs it."""
    app = FakeApp(tmp_path, REGISTRY, Brakes(max_running=3, wave_max_running=3))
    for n in range(N):
        add_task(app, f"app{n:03d}", ["base"], output=f"app{n:03d}:{{{{.Run.ID}}}}")
    monkeypatch.setattr(app.lifecycle, "record_in_background", lambda wave_id: None, raising=False)
    return app


@pytest.fixture
def app(tmp_path, monkeypatch):
    return big_wave_app(tmp_path, monkeypatch)


def count_writes(app: FakeApp) -> list[str]:
    written: list[str] = []
    for name in ("create_many", "create_absent"):
        real = getattr(app.runs, name, None)
        if real is not None:
            setattr(app.runs, name,
                    lambda runs, real=real: written.extend(r.run_id for r in runs) or real(runs))
    return written


def test_a_big_push_records_only_the_released_runs_before_it_answers(app):
    written = count_writes(app)
    decision = app.dispatcher.handle(push_event("base", "sha256:" + "1" * 64, "push-1"))
    assert len(decision.runs) == N
    assert len(written) == 3, f"the push recorded {len(written)} runs before answering, not the cap's 3"
    assert sorted(written) == sorted(app.queue.sent)
    # Every dependent shows a pending run at once: the newest-first list, by task, by id.
    listed, _ = app.lifecycle.reads.newest(top=1000)
    assert sorted(r.run_id for r in listed) == sorted(decision.runs)
    assert {r.status for r in listed} == {RunStatus.QUEUED}
    (one,) = app.lifecycle.reads.newest(task="app149")[0]
    assert app.lifecycle.reads.get(one.run_id)[0].task == "app149"
    page, after = app.lifecycle.reads.newest(top=100)
    rest, _ = app.lifecycle.reads.newest(top=100, after=after)
    assert len(page) == 100 and len({r.run_id for r in page + rest}) == N


def test_deliveries_again_make_nothing_twice_while_the_backlog_waits(app):
    first = app.dispatcher.handle(push_event("base", "sha256:" + "1" * 64, "push-1"))
    ids_before = app.runs.allocate(1)[0]
    again = app.dispatcher.handle(push_event("base", "sha256:" + "1" * 64, "push-1-again"))
    assert again.runs == [] and {t.outcome for t in again.tasks} == {Outcome.ALREADY_TRIGGERED}
    newer = app.dispatcher.handle(push_event("base", "sha256:" + "2" * 64, "push-2"))
    assert newer.runs == [] and {t.outcome for t in newer.tasks} == {Outcome.COALESCED}
    assert app.runs.allocate(1)[0] == app.runs.ids.format(app.runs.ids.counter(ids_before) + 1), \
        "a delivery burnt run ids"
    assert len(app.queue.sent) == 3 and len(first.runs) == N


def test_releases_record_what_they_release_and_every_run_builds_once(app):
    decision = app.dispatcher.handle(push_event("base", "sha256:" + "1" * 64, "push-1"))
    order = play(app)
    assert sorted(order) == sorted(f"app{n:03d}" for n in range(N))
    assert len(app.queue.sent) == len(set(app.queue.sent)) == N
    assert {r.status for r in app.runs.all()} == {RunStatus.SUCCEEDED}
    assert sorted(r.run_id for r in app.runs.all()) == sorted(decision.runs)
    assert app.wave_store.get("w1")[0].state == WaveState.DONE


def test_housekeeping_records_a_backlog_the_background_never_did_and_changes_no_run(app):
    app.dispatcher.handle(push_event("base", "sha256:" + "1" * 64, "push-1"))
    (first, *_) = app.queue.sent
    backlog = app.backlog.backlogs["w1"]
    app.lifecycle.sweep()
    assert app.backlog.waves() == [] and len(app.runs.all()) == N
    # A recording that comes late (again) leaves the runs as they are since: insert-or-skip.
    app.worker.execute(first)
    app.backlog.backlogs["w1"] = backlog
    app.lifecycle.record_backlog("w1")
    assert app.runs.get(first)[0].status == RunStatus.SUCCEEDED
    assert len(app.runs.all()) == N


def test_a_wave_canceled_before_its_backlog_is_recorded_leaves_no_queued_run(app):
    app.dispatcher.handle(push_event("base", "sha256:" + "1" * 64, "push-1"))
    app.waves.cancel("w1")
    stuck = [r.run_id for r in app.runs.all() if r.status == RunStatus.QUEUED and not r.released]
    assert not stuck and app.wave_store.get("w1")[0].state == WaveState.CANCELED
    app.lifecycle.sweep()
    assert not [r for r in app.runs.all() if r.status == RunStatus.QUEUED and not r.released]


def test_a_run_still_in_the_backlog_can_be_canceled_by_request(app):
    decision = app.dispatcher.handle(push_event("base", "sha256:" + "1" * 64, "push-1"))
    last = decision.runs[-1]
    assert app.scheduler.cancel(last).status == RunStatus.CANCELED
    assert app.runs.get(last)[0].status == RunStatus.CANCELED
    assert app.wave_store.member("w1", app.runs.get(last)[0].task or "").outcome == RunStatus.CANCELED


def test_a_newer_push_reads_the_backlog_once_not_once_per_pending_run(app):
    app.dispatcher.handle(push_event("base", "sha256:" + "1" * 64, "push-1"))
    reads = []
    real = app.backlog.get_record
    app.backlog.get_record = lambda wave_id: reads.append(wave_id) or real(wave_id)
    newer = app.dispatcher.handle(push_event("base", "sha256:" + "2" * 64, "push-2"))
    assert {t.outcome for t in newer.tasks} == {Outcome.COALESCED}
    assert len(reads) <= 1, f"the backlog was read {len(reads)} times for one push"


# ---- a big wave's members and ready marks: written from the backlog too ----------------------

def count_member_writes(app: FakeApp) -> list[str]:
    """Member rows written (created, added, or recorded from a backlog), by task."""
    written: list[str] = []
    store = app.wave_store
    create, add = store.create, store.add_member
    store.create = lambda wave, members: written.extend(m.task for m in members) or create(wave, members)
    store.add_member = lambda member: (written.append(member.task) or True) and add(member)
    return written


def test_a_big_push_writes_only_the_released_members_before_it_answers(app):
    written = count_member_writes(app)
    decision = app.dispatcher.handle(push_event("base", "sha256:" + "1" * 64, "push-1"))
    released = {app.runs.get(run_id)[0].task for run_id in app.queue.sent}
    assert len(decision.runs) == N and len(released) == 3
    assert sorted(written) == sorted(released), \
        f"the push wrote {len(written)} member rows before answering, not the cap's 3"
    assert not app.wave_store.ready_marks.get("w1"), "ready marks were written before the answer"
    # The wave row counts every member of the plan, and says where the others are.
    wave, _ = app.wave_store.get("w1")
    assert wave.counts == {"Queued": 3, "Waiting": N - 3} and wave.backlog
    assert len(app.backlog.get_record("w1").members) == N - 3
    # Recorded afterwards: every member, a ready mark for each that waits, and the record is gone.
    app.lifecycle.record_backlog("w1")
    assert len(app.wave_store.members("w1")) == N
    assert len(app.wave_store.ready_marks["w1"]) == N - 3
    assert app.backlog.waves() == []


@pytest.fixture
def deep(tmp_path, monkeypatch):
    """base -> mid -> N deep tasks: the push releases mid alone; its N dependents wait in the
    backlog, which the background never records (the process stopped after answering)."""
    app = FakeApp(tmp_path, REGISTRY, Brakes(max_running=3, wave_max_running=3))
    add_task(app, "mid", ["base"])
    for n in range(N):
        add_task(app, f"deep{n:03d}", ["mid"], output=f"deep{n:03d}:{{{{.Run.ID}}}}")
    monkeypatch.setattr(app.lifecycle, "record_in_background", lambda wave_id: None, raising=False)
    return app


def test_a_run_that_ends_before_the_backlog_is_recorded_still_releases_its_dependents(deep):
    decision = deep.dispatcher.handle(push_event("base", "sha256:" + "1" * 64, "push-1"))
    assert len(decision.runs) == N + 1 and len(deep.queue.sent) == 1
    assert deep.wave_store.member("w1", "deep000") is None  # in the backlog still
    # mid builds and ends: its dependents arrive, are ready, and the first three are released.
    assert play(deep, limit=1) == ["mid"]
    assert deep.backlog.waves() == []
    assert all(m.arrived == ["mid"] for m in deep.wave_store.members("w1") if m.task != "mid")
    assert len(deep.queue.sent) == 4
    order = play(deep)  # (from the first message again: mid's is a no-op now)
    assert sorted(order) == [f"deep{n:03d}" for n in range(N)]
    assert len(deep.queue.sent) == len(set(deep.queue.sent)) == N + 1
    assert deep.wave_store.get("w1")[0].state == WaveState.DONE


def test_housekeeping_records_the_members_of_a_process_that_died_before_recording(app):
    app.dispatcher.handle(push_event("base", "sha256:" + "1" * 64, "push-1"))
    assert len(app.wave_store.members("w1")) == 3
    app.lifecycle.sweep()
    assert app.backlog.waves() == [] and len(app.wave_store.members("w1")) == N
    assert len(app.runs.all()) == N
    order = play(app)
    assert sorted(order) == sorted(f"app{n:03d}" for n in range(N))
    assert len(app.queue.sent) == len(set(app.queue.sent)) == N
    assert app.wave_store.get("w1")[0].state == WaveState.DONE


def test_redeliveries_write_no_member_run_or_message_again(app):
    written = count_member_writes(app)
    runs_written = count_writes(app)
    first = app.dispatcher.handle(push_event("base", "sha256:" + "1" * 64, "push-1"))
    next_id = app.runs.ids.format(app.runs.ids.counter(max(first.runs, key=app.runs.ids.counter)) + 1)
    again = app.dispatcher.handle(push_event("base", "sha256:" + "1" * 64, "push-1"))
    other_id = app.dispatcher.handle(push_event("base", "sha256:" + "1" * 64, "push-1-again"))
    assert again.runs == first.runs and other_id.runs == []
    assert len(written) == 3 and len(runs_written) == 3 and len(app.queue.sent) == 3
    assert app.runs.allocate(1) == [next_id], "a delivery burnt run ids"


def test_the_wave_is_never_recounted_held_or_done_from_part_of_its_members(app):
    app.dispatcher.handle(push_event("base", "sha256:" + "1" * 64, "push-1"))
    app.waves.catch_up()  # housekeeping's recount, before the backlog is recorded
    wave, _ = app.wave_store.get("w1")
    assert wave.state == WaveState.ACTIVE and sum(wave.counts.values()) == N
    # The first three builds fail: the breaker holds the wave, and every waiting run with it.
    play(app, fail={f"app{n:03d}" for n in range(N)}, limit=3)
    wave, _ = app.wave_store.get("w1")
    assert wave.state == WaveState.HELD
    # (What was released before it tripped keeps its message and builds.)
    statuses = [r.status for r in app.runs.all()]
    assert len(statuses) == N and statuses.count(RunStatus.HELD) == N - len(app.queue.sent)


def test_a_wave_without_a_backlog_costs_no_look_at_the_backlog(tmp_path):
    app = FakeApp(tmp_path, REGISTRY, Brakes(max_running=3, wave_max_running=3))
    add_task(app, "mid", ["base"])
    add_task(app, "leaf", ["mid"], output="leaf:{{.Run.ID}}")
    app.dispatcher.handle(push_event("base", "sha256:" + "1" * 64, "push-1"))
    looks: list[str] = []
    for name in ("get", "get_record"):
        real = getattr(app.backlog, name)
        setattr(app.backlog, name, lambda wave_id, real=real, name=name: looks.append(name) or real(wave_id))
    assert sorted(play(app)) == ["leaf", "mid"]
    assert looks == [], f"a small wave's runs looked at the backlog: {looks}"


def test_a_backlog_of_the_first_format_still_reads(app):
    from shared.adapters.run_backlog import from_json

    decision = app.dispatcher.handle(push_event("base", "sha256:" + "1" * 64, "push-1"))
    runs = app.backlog.get("w1")
    old = json.dumps([run.to_record() for run in runs])
    record = from_json(old)
    assert [r.run_id for r in record.runs] == [r.run_id for r in runs] and record.members == []
    assert set(r.run_id for r in runs) < set(decision.runs)


def test_a_newer_push_finds_tasks_waiting_in_a_backlog_without_recording_it(deep):
    deep.dispatcher.handle(push_event("base", "sha256:" + "1" * 64, "push-1"))
    tasks = [f"deep{n:03d}" for n in range(N)]
    waiting = deep.waves.waiting_elsewhere(tasks)
    assert sorted(waiting) == tasks and {run.wave_id for run in waiting.values()} == {"w1"}
    assert deep.backlog.waves() == ["w1"], "another push recorded the wave's backlog"
