"""`task why` and the staleness report on in-memory fakes, fed by the real dispatcher."""

from datetime import UTC, datetime, timedelta

import pytest

from shared.domain.builds import BuildResult
from shared.domain.decisions import Decision, TaskDecision
from shared.domain.events import ImagePushed
from shared.domain.runs import Run
from shared.domain.tasks import Dependency, Task, TaskNotFound
from shared.domain.vocabulary import EventSource, Outcome, RunStatus, TriggerType, WaveState
from shared.domain.waves import Brakes
from shared.service_layer.history import TaskHistory
from shared.service_layer.staleness import Cause, StalenessReport, State
from tests.fakes import FakeApp

REGISTRY = "localhost:5000"
BASE = f"{REGISTRY}/base:1"
D0, D1, D2 = ("sha256:" + c * 64 for c in "012")
T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


@pytest.fixture
def app(tmp_path):
    return FakeApp(tmp_path, REGISTRY)


def add(app, name, digest=D0, runtime=True, bases=(BASE,), **fields):
    task = Task(name=name, images=[f"{name}:{{{{.Run.ID}}}}"], context="/ctx",
                dependencies=[Dependency(b, digest, runtime) for b in bases], **fields)
    app.task_store.create(task)
    app.index.sync_task(task, previous=[])
    return task


def push(app, digest, n, repository="base", tag="1"):
    """A push dispatched by the real dispatcher, `n` minutes after T0."""
    event = ImagePushed(f"e{n}", REGISTRY, repository, tag, digest, T0 + timedelta(minutes=n),
                        EventSource.DISTRIBUTION)
    decision = app.dispatcher.handle(event)
    decision.time = event.time  # the fake log keeps the object: give it the push's time
    return decision


def finish(app, run_id, status, reason=None):
    run, etag = app.runs.get(run_id)
    run.status, run.reason = status, reason
    app.runs.save(run, etag)


# ---- task why --------------------------------------------------------------------------------
def test_why_lists_the_task_own_verdicts_newest_first_with_run_status(app):
    add(app, "app")
    add(app, "off", trigger_enabled=False)
    first = push(app, D1, 1)
    finish(app, first.runs[0], RunStatus.FAILED, "build failed")
    run, etag = app.runs.get(first.runs[0])
    run.update_decision = "rebuilt: RUN in final stage"  # what the worker recorded
    app.runs.save(run, etag)
    push(app, D2, 2, repository="elsewhere")  # not a base of app: not listed
    history = TaskHistory(app.task_store, app.decisions, app.runs)
    (verdict,) = history.why("app")
    assert (verdict.outcome, verdict.run_id, verdict.run_status) == (Outcome.QUEUED, first.runs[0],
                                                                     RunStatus.FAILED)
    assert verdict.run_reason == "build failed" and verdict.image == BASE and verdict.digest == D1
    assert verdict.update_decision == "rebuilt: RUN in final stage"
    (off,) = history.why("off")
    assert off.outcome == Outcome.TRIGGER_DISABLED and off.run_id is None
    with pytest.raises(TaskNotFound):
        history.why("nobody")


def test_why_finds_a_task_cut_from_a_big_fan_out_through_its_run(app):
    add(app, "app")
    decision = push(app, D1, 1)
    decision.tasks = [TaskDecision("someone-else", Outcome.QUEUED, "kept")]  # details that fit
    (verdict,) = TaskHistory(app.task_store, app.decisions, app.runs).why("app")
    assert (verdict.outcome, verdict.run_id) == (Outcome.QUEUED, decision.runs[0])


def test_why_says_when_a_decision_does_not_name_the_task(app):
    add(app, "app")
    app.decisions.record(Decision("e9", EventSource.DISTRIBUTION, Outcome.QUEUED, "1 dependent task(s)",
                                  image=BASE, digest=D1, tasks=[TaskDecision("x", Outcome.QUEUED, "r")]))
    (verdict,) = TaskHistory(app.task_store, app.decisions, app.runs).why("app")
    assert "not among the 1 task outcome(s)" in verdict.reason


# ---- staleness -------------------------------------------------------------------------------
def report(app, digests, waves=None):
    app.registry.digests = dict(digests)
    entries, checked = StalenessReport(app.task_store, app.runs, app.decisions, app.registry,
                                       waves).report()
    return {(e.task, e.base): e for e in entries}, checked


def test_a_current_task_is_not_stale(app):
    add(app, "app")
    entries, checked = report(app, {BASE: D0})
    assert entries == {} and checked == {"tasks": 1, "bases": 1, "dependencies": 1}


def test_each_reason_a_rebuild_did_not_happen(app):
    add(app, "off", trigger_enabled=False)
    add(app, "stage", runtime=False)
    add(app, "failed")
    add(app, "pending")
    add(app, "all-stage", runtime=False, trigger_type=TriggerType.ALL)
    decision = push(app, D1, 1)
    runs = {t.task: t.run_id for t in decision.tasks if t.run_id}
    finish(app, runs["failed"], RunStatus.FAILED, "exit status 1")
    finish(app, runs["all-stage"], RunStatus.TIMEOUT, "took too long")
    entries, _ = report(app, {BASE: D1})
    causes = {task: entries[(task, BASE)].cause for task, _ in entries}
    assert causes == {"off": Cause.TRIGGER_DISABLED, "stage": Cause.NOT_RUNTIME,
                      "failed": Cause.RUN_FAILED, "pending": Cause.REBUILD_PENDING,
                      "all-stage": Cause.RUN_FAILED}
    failed = entries[("failed", BASE)]
    assert failed.state == State.STALE and failed.run_id == runs["failed"]
    assert "exit status 1" in failed.reason
    assert (failed.built_digest, failed.current_digest, failed.source) == (D0, D1, "registry")
    assert failed.since == T0 + timedelta(minutes=1) and failed.event_id == "e1"


def test_a_tag_moved_without_an_event_is_a_missed_notification(app):
    add(app, "app")
    entries, _ = report(app, {BASE: D2})
    entry = entries[("app", BASE)]
    assert entry.cause == Cause.NO_EVENT and entry.since is None


def test_since_is_the_first_push_after_the_built_digest(app):
    add(app, "app", trigger_enabled=False)
    push(app, D0, 1)
    push(app, D1, 2)
    push(app, D2, 3)
    entries, _ = report(app, {BASE: D2})
    assert entries[("app", BASE)].since == T0 + timedelta(minutes=2)


def test_an_unreachable_registry_falls_back_to_events_or_says_unknown(app):
    add(app, "app", trigger_enabled=False)
    add(app, "lonely", bases=(f"{REGISTRY}/lonely:1",))
    push(app, D1, 1)
    entries, _ = report(app, {})
    from_events = entries[("app", BASE)]
    assert (from_events.current_digest, from_events.source) == (D1, "events")
    assert "cannot be asked" in from_events.reason
    unknown = entries[("lonely", f"{REGISTRY}/lonely:1")]
    assert (unknown.state, unknown.cause) == (State.UNKNOWN, Cause.BASE_UNREACHABLE)
    assert list(entries) == [("app", BASE), ("lonely", f"{REGISTRY}/lonely:1")]  # stale first


# ---- staleness: a wave's circuit breaker -----------------------------------------------------
@pytest.fixture
def held(tmp_path):
    """Six tasks on the base; the push starts wave w1 (two builds at a time); the first three builds
    fail, so the breaker holds the wave: three runs failed, one released before the hold (it builds
    anyway), two Held."""
    app = FakeApp(tmp_path, REGISTRY, Brakes(max_running=2, wave_max_running=2, breaker_first_failures=3))
    for n in range(6):
        add(app, f"app{n}")
    decision = push(app, D1, 1)
    assert "wave w1" in decision.reason
    app.builder.result = BuildResult(RunStatus.FAILED, reason="exit status 1")
    for _ in range(3):
        app.worker.execute(app.queue.sent[len([r for r in app.runs.all() if r.finished])])
    assert app.wave_store.get("w1")[0].state == WaveState.HELD
    return app


def by_status(app) -> dict[RunStatus, list[Run]]:
    found: dict[RunStatus, list[Run]] = {}
    for run in app.runs.all():
        found.setdefault(run.status, []).append(run)
    return found


def test_a_run_held_by_its_wave_breaker_is_wave_held_not_pending(held):
    runs = by_status(held)
    assert len(runs[RunStatus.HELD]) == 2 and len(runs[RunStatus.FAILED]) == 3
    (released,) = runs[RunStatus.QUEUED]  # had its message before the hold: it builds
    entries, _ = report(held, {BASE: D1}, held.wave_store)
    causes = {e.run_id: e.cause for e in entries.values()}
    for run in runs[RunStatus.HELD]:
        entry = entries[(run.task, BASE)]
        assert entry.cause == Cause.WAVE_HELD and entry.run_id == run.run_id
        assert "wave w1" in entry.reason and "circuit breaker" in entry.reason
        assert "wave resume" in entry.reason
    assert causes[released.run_id] == Cause.REBUILD_PENDING
    assert all(causes[r.run_id] == Cause.RUN_FAILED for r in runs[RunStatus.FAILED])
    # the run's own status says it, even where the report cannot read waves
    without, _ = report(held, {BASE: D1})
    assert {e.cause for e in without.values() if e.run_id in {r.run_id for r in runs[RunStatus.HELD]}} == {
        Cause.WAVE_HELD}


def test_a_run_still_queued_in_a_held_wave_is_wave_held(held):
    # A run the hold did not reach (say the host stopped half-way through it): Queued, unreleased.
    run = by_status(held)[RunStatus.HELD][0]
    stored, etag = held.runs.get(run.run_id)
    stored.status, stored.reason = RunStatus.QUEUED, None
    held.runs.save(stored, etag)
    entries, _ = report(held, {BASE: D1}, held.wave_store)
    entry = entries[(run.task, BASE)]
    assert entry.cause == Cause.WAVE_HELD and "circuit breaker" in entry.reason
    # the wave's state is what says so: without the waves it is only a pending rebuild
    without, _ = report(held, {BASE: D1})
    assert without[(run.task, BASE)].cause == Cause.REBUILD_PENDING


def test_a_resumed_wave_is_pending_again_not_held(held):
    held.waves.resume("w1")
    entries, _ = report(held, {BASE: D1}, held.wave_store)
    assert Cause.WAVE_HELD not in {e.cause for e in entries.values()}
    assert sum(1 for e in entries.values() if e.cause == Cause.REBUILD_PENDING) == 3
