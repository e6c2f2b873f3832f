"""Waves on in-memory fakes: order, coalescing, cycles, caps, the circuit breaker, operator commands.

Builds are simulated: a test plays the worker (runs whatever has a queue message) and the registry
(each successful run "pushes" its fixed-tag outputs through the dispatcher, as the webhook would).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.domain.builds import BuildResult
from shared.domain.dependencies import DependencyRow
from shared.domain.events import ImagePushed
from shared.domain.tasks import Dependency, Task, TaskError
from shared.domain.vocabulary import EventSource, Outcome, RunStatus, TriggerType, WaveState
from shared.domain.waves import Brakes, Member
from shared.service_layer import run_life as life_mod
from tests.fakes import FakeApp

REGISTRY = "localhost:5000"
DIGEST = "sha256:" + "1" * 64


def ref(name: str) -> str:
    return f"{REGISTRY}/{name}:latest"


def add_task(app: FakeApp, name: str, bases: list[str], output: str | None = None) -> Task:
    task = Task(name=name, images=[output or f"{name}:latest"], context=f"/ctx/{name}",
                dependencies=[Dependency(ref(b), "sha256:" + "0" * 64, True) for b in bases])
    app.sources.dockerfiles[task.context] = "".join(f"FROM {ref(b)}\n" for b in bases)
    app.task_store.create(task)
    app.index.sync_task(task, previous=[])
    return task


def push(app: FakeApp, name: str, digest: str = DIGEST, n: int = 0):
    event = ImagePushed(f"push-{name}-{digest[-4:]}-{n}", REGISTRY, name, "latest", digest,
                        datetime.now(UTC), EventSource.DISTRIBUTION)
    return app.dispatcher.handle(event)


def play(app: FakeApp, fail: set[str] = frozenset(), limit: int = 1000) -> list[str]:
    """Run every sent message as the worker would, in order; a successful run pushes its output.
    Returns the tasks in the order they built."""
    order: list[str] = []
    done = 0
    while done < len(app.queue.sent) and limit:
        limit -= 1
        run_id = app.queue.sent[done]
        done += 1
        run, _ = app.runs.get(run_id)
        app.builder.result = BuildResult(RunStatus.FAILED if run.task in fail else RunStatus.SUCCEEDED,
                                         output_digest="sha256:" + f"{done:064x}")
        finished = app.worker.execute(run_id)
        if finished is None:
            continue
        order.append(run.task or "")
        if finished.status == RunStatus.SUCCEEDED and run.task:
            task = app.task_store.get(run.task)
            for image in task.images:
                if "{{" not in image:
                    name = image.rsplit(":", 1)[0]
                    app.runs.create_many([])  # the push happens after the run recorded its output
                    push(app, name, finished.output_digest or DIGEST, n=done)
    return order


@pytest.fixture
def app(tmp_path):
    return FakeApp(tmp_path, REGISTRY)


def test_the_diamond_rebuilds_the_app_once_after_both_mids(app):
    add_task(app, "mid1", ["base"])
    add_task(app, "mid2", ["base"])
    add_task(app, "app", ["mid1", "mid2"])
    decision = push(app, "base")
    assert decision.outcome == Outcome.QUEUED and "wave w1: 3 run(s) in 2 level(s)" in decision.reason
    order = play(app)
    assert sorted(order[:2]) == ["mid1", "mid2"] and order[2:] == ["app"]
    app_runs, _ = app.runs.newest(task="app")
    assert len(app_runs) == 1 and app_runs[0].status == RunStatus.SUCCEEDED
    wave, _ = app.wave_store.get("w1")
    assert wave.state == WaveState.DONE and wave.counts == {"Succeeded": 3}
    in_wave = [t for d in app.decisions.decisions for t in d.tasks if t.outcome == Outcome.IN_WAVE]
    assert {t.task for t in in_wave} == {"app"}  # the mids' pushes: app builds once, in the wave


def test_an_app_from_the_base_and_a_mid_waits_for_the_mid(app):
    add_task(app, "mid", ["base"])
    add_task(app, "app", ["base", "mid"])
    push(app, "base")
    assert play(app) == ["mid", "app"]


def test_a_cycle_formed_outside_the_service_stops_after_one_pass(app):
    # Created in an order the create-time check cannot see (the index is written directly).
    add_task(app, "cyca", ["cyc/b"], output="cyc/a:latest")
    add_task(app, "cycb", ["cyc/a"], output="cyc/b:latest")
    push(app, "cyc/b")
    order = play(app)
    assert order == ["cyca", "cycb"]
    refused = [t for d in app.decisions.decisions for t in d.tasks
               if t.outcome == Outcome.ALREADY_RAN_IN_WAVE]
    assert [t.task for t in refused] == ["cyca"] and "never re-enters" in refused[0].reason


def test_a_manual_run_cascades_in_its_own_wave_and_a_cycle_still_stops(app):
    add_task(app, "cyca", ["cyc/b"], output="cyc/a:latest")
    add_task(app, "cycb", ["cyc/a"], output="cyc/b:latest")
    run = app.scheduler.run_task("cyca")
    assert run.wave_id == "w1" and app.queue.sent == [run.run_id]
    assert play(app) == ["cyca", "cycb"]
    assert len(app.runs.all()) == 2


def test_caps_hold_and_every_run_of_a_big_wave_still_runs(tmp_path):
    app = FakeApp(tmp_path, REGISTRY, Brakes(max_running=5, wave_max_running=3))
    for n in range(200):
        add_task(app, f"app{n:03d}", ["base"], output=f"app{n:03d}:{{{{.Run.ID}}}}")
    push(app, "base")
    assert len(app.queue.sent) == 3  # the wave's cap: the rest wait, Queued, with no message
    assert sum(1 for r in app.runs.all() if r.released) == 3
    order = play(app)
    assert len(order) == 200 and app.slots.most_at_once["w1"] <= 3 and app.slots.most_at_once["global"] <= 5
    assert app.slots.holders("global") == []


def test_two_waves_share_the_global_cap(tmp_path):
    app = FakeApp(tmp_path, REGISTRY, Brakes(max_running=4, wave_max_running=3))
    for n in range(6):
        add_task(app, f"a{n}", ["base-a"], output=f"a{n}:{{{{.Run.ID}}}}")
        add_task(app, f"b{n}", ["base-b"], output=f"b{n}:{{{{.Run.ID}}}}")
    push(app, "base-a")
    push(app, "base-b")
    assert len(app.queue.sent) == 4  # 3 of the first wave, 1 of the second: the global cap
    assert len(play(app)) == 12 and app.slots.most_at_once["global"] <= 4


def test_a_manual_run_is_not_stuck_behind_a_full_service(tmp_path):
    app = FakeApp(tmp_path, REGISTRY, Brakes(max_running=1, wave_max_running=1))
    for n in range(3):
        add_task(app, f"app{n}", ["base"], output=f"app{n}:{{{{.Run.ID}}}}")
    push(app, "base")
    manual = app.scheduler.run_task("app2")
    assert manual.run_id in app.queue.sent


def test_the_breaker_holds_a_wave_whose_base_is_broken(tmp_path):
    app = FakeApp(tmp_path, REGISTRY, Brakes(max_running=2, wave_max_running=2, breaker_first_failures=3))
    names = [f"app{n}" for n in range(10)]
    for name in names:
        add_task(app, name, ["base"], output=f"{name}:{{{{.Run.ID}}}}")
    push(app, "base")
    order = play(app, fail=set(names))
    assert len(order) == 4  # the first three failed: the rest is held, but for one already released
    wave, _ = app.wave_store.get("w1")
    assert wave.state == WaveState.HELD and "circuit breaker" in (wave.reason or "")
    held = [r for r in app.runs.all() if r.status == RunStatus.HELD]
    assert len(held) == 6
    assert any(d.outcome == Outcome.HELD for d in app.decisions.decisions)

    app.waves.resume("w1")
    assert play(app) and all(r.status == RunStatus.SUCCEEDED or r.status == RunStatus.FAILED
                             for r in app.runs.all())
    assert app.wave_store.get("w1")[0].state == WaveState.DONE


def test_cancel_stops_what_has_not_run(tmp_path):
    app = FakeApp(tmp_path, REGISTRY, Brakes(max_running=1, wave_max_running=1))
    for n in range(4):
        add_task(app, f"app{n}", ["base"], output=f"app{n}:{{{{.Run.ID}}}}")
    push(app, "base")
    wave = app.waves.cancel("w1")
    assert wave.state == WaveState.CANCELED
    assert all(r.status == RunStatus.CANCELED for r in app.runs.all())
    assert play(app) == []
    assert app.slots.holders("global") == []


def test_a_failed_mid_cancels_what_was_to_be_built_on_it(app):
    add_task(app, "mid", ["base"])
    add_task(app, "app", ["mid"])
    push(app, "base")
    assert play(app, fail={"mid"}) == ["mid"]
    app_run = app.runs.newest(task="app")[0][0]
    assert app_run.status == RunStatus.CANCELED and "mid" in (app_run.reason or "")


def test_housekeeping_notices_a_run_that_ended_unnoticed(app):
    add_task(app, "mid", ["base"])
    add_task(app, "app", ["mid"])
    push(app, "base")
    mid_run = app.runs.newest(task="mid")[0][0]
    finished = app.waves.run_finished
    app.waves.run_finished = lambda run: None  # the worker died right after recording the end
    app.worker.execute(mid_run.run_id)
    app.waves.run_finished = finished
    assert len(app.queue.sent) == 1
    app.lifecycle.sweep()
    assert len(app.queue.sent) == 2  # app was released by reconcile


def context(app, tmp_path, name: str, base: str) -> str:
    """A real directory (the service reads it as a context), whose Dockerfile the fake serves."""
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    app.sources.dockerfiles[str(folder)] = f"FROM {ref(base)}\n"
    return str(folder)


def test_a_two_task_cycle_is_refused_at_create_with_the_cycle_spelled_out(app, tmp_path):
    app.tasks.create(Task(name="cyca", images=["cyc/a:latest"], context=context(app, tmp_path, "a", "cyc/b")))
    with pytest.raises(TaskError) as refused:
        app.tasks.create(Task(name="cycb", images=["cyc/b:latest"],
                              context=context(app, tmp_path, "b", "cyc/a")))
    assert str(refused.value).endswith(
        f"cycle: cycb → {ref('cyc/b')} → cyca → {ref('cyc/a')} → cycb")
    assert [t.name for t in app.task_store.all()] == ["cyca"]


def test_an_update_that_would_close_a_cycle_is_refused_and_changes_nothing(app, tmp_path):
    for name, base, out in (("a", "base", "x/a"), ("b", "x/a", "x/b"), ("c", "x/b", "x/c")):
        app.tasks.create(Task(name=name, images=[f"{out}:latest"],
                              context=context(app, tmp_path, name, base)))
    before = app.task_store.get("a").context
    with pytest.raises(TaskError, match="a → .*x/a:latest → b → .*x/b:latest → c → .*x/c:latest → a"):
        app.tasks.update("a", context=context(app, tmp_path, "a2", "x/c"))
    assert app.task_store.get("a").context == before


def test_base_rebuild_starts_a_wave_even_where_the_digest_is_unchanged(app):
    add_task(app, "mid", ["base"])
    add_task(app, "app", ["mid"])
    app.index.table.put_build_fields(  # both already built on the digest the rebuild names
        DependencyRow(base=ref("base"), task="mid", runtime=True, trigger_enabled=True,
                      trigger_type=TriggerType.RUNTIME, built_digest=DIGEST))
    assert push(app, "base").outcome == Outcome.DIGEST_UNCHANGED
    event = ImagePushed("rebuild-1", REGISTRY, "base", "latest", DIGEST, datetime.now(UTC),
                        EventSource.REBUILD)
    decision = app.dispatcher.rebuild(event)
    assert decision.outcome == Outcome.QUEUED and "2 run(s) in 2 level(s)" in decision.reason
    assert play(app) == ["mid", "app"]


def one_running_one_waiting(tmp_path) -> tuple[FakeApp, str, Member]:
    """A wave of two under a wave cap of one: the first run has its message, the other waits."""
    app = FakeApp(tmp_path, REGISTRY, Brakes(max_running=5, wave_max_running=1))
    for n in range(2):
        add_task(app, f"app{n}", ["base"], output=f"app{n}:{{{{.Run.ID}}}}")
    push(app, "base")
    (first,) = app.queue.sent
    return app, first, next(m for m in app.wave_store.members("w1") if not m.released)


def test_a_run_released_twice_gets_one_message_and_keeps_its_places(tmp_path):
    # Two releasers (a finished run's worker and housekeeping, say) reach the same ready member: the
    # one that lost the release sends nothing and gives back nothing (the places are the run's).
    app, first, waiting = one_running_one_waiting(tmp_path)
    app.builder.result = BuildResult(RunStatus.SUCCEEDED, output_digest=DIGEST)
    app.worker.execute(first)  # its end releases the waiting member
    assert app.queue.sent == [first, waiting.run_id]
    assert app.lifecycle._release_one(waiting) is False  # the same member again, as a late releaser
    assert app.queue.sent == [first, waiting.run_id]
    assert waiting.run_id in app.slots.holders("w1") and waiting.run_id in app.slots.holders("global")


def test_a_redelivery_while_a_release_sends_its_message_sends_it_no_second_time(tmp_path):
    # `make chaos`'s burst: a run released after its wave started (another run ended) is noted
    # unsent until its send is done; a delivery of the same push arriving just then took it for
    # one its dispatch had failed to send, and sent it too (two messages for one run).
    app, first, waiting = one_running_one_waiting(tmp_path)
    send = app.queue.send

    def redelivered_meanwhile(run_ids: list[str]) -> None:
        app.queue.send = send
        assert push(app, "base", n=1).outcome == Outcome.ALREADY_TRIGGERED  # the same push again
        send(run_ids)

    app.queue.send = redelivered_meanwhile
    app.builder.result = BuildResult(RunStatus.SUCCEEDED, output_digest=DIGEST)
    app.worker.execute(first)  # its end releases the waiting member
    assert app.queue.sent == [first, waiting.run_id]


# ---- crashes and races in the middle of a wave's steps ----------------------------------------
class Boom(RuntimeError):
    pass


def test_a_crash_while_a_finished_run_releases_its_dependents_is_repaired_by_housekeeping(tmp_path):
    app = FakeApp(tmp_path, REGISTRY)
    add_task(app, "mid", ["base"])
    add_task(app, "app", ["mid"])
    push(app, "base")
    (mid_id,) = app.queue.sent
    real = app.wave_store.mark_ready
    def crash(member):  # the instance dies (or storage fails) after the producer's outcome is written
        raise Boom()
    app.wave_store.mark_ready = crash
    app.builder.result = BuildResult(RunStatus.SUCCEEDED, output_digest=DIGEST)
    with pytest.raises(Boom):
        app.worker.execute(mid_id)
    app.wave_store.mark_ready = real
    assert app.worker.execute(mid_id) is None      # the queue's redelivery: finished, nothing done
    app.lifecycle.sweep()                              # housekeeping's reconcile
    app_run = app.runs.newest(task="app")[0][0]
    assert app_run.run_id in app.queue.sent, "app never released: waits forever"


def test_a_member_joining_a_wave_settled_done_reopens_it_and_builds(tmp_path):
    app = FakeApp(tmp_path, REGISTRY)
    add_task(app, "mid", ["base"])
    push(app, "base")
    play(app)
    assert app.wave_store.get("w1")[0].state == WaveState.DONE
    # a task built FROM mid's output appears; mid's push webhook is delivered late (or again)
    row = DependencyRow(base=f"{REGISTRY}/mid:latest", task="late", runtime=True, trigger_enabled=True,
                        trigger_type=app.task_store.get("mid").trigger_type, images=["late:latest"])
    producer = app.wave_store.member("w1", "mid")
    run = app.waves.join("w1", producer, row, "late push")
    assert run is not None and run.run_id in app.queue.sent
    assert app.wave_store.get("w1")[0].state == WaveState.ACTIVE  # until the newcomer ends


def test_a_cancel_that_fails_part_way_is_finished_by_canceling_again(tmp_path):
    app = FakeApp(tmp_path, REGISTRY, Brakes(max_running=1, wave_max_running=1))
    for n in range(3):
        add_task(app, f"app{n}", ["base"], output=f"app{n}:{{{{.Run.ID}}}}")
    push(app, "base")
    real = app.waves._cancel_run
    calls = []
    def cancel_run(member, reason, status=RunStatus.CANCELED):
        calls.append(member.task)
        if len(calls) == 2:
            raise Boom()
        return real(member, reason, status)
    app.waves._cancel_run = cancel_run
    with pytest.raises(Boom):
        app.waves.cancel("w1")
    app.waves._cancel_run = real
    app.lifecycle.sweep()
    assert app.wave_store.get("w1")[0].state == WaveState.ACTIVE  # the cancel did not take
    app.waves.cancel("w1")  # the operator retries
    assert app.wave_store.get("w1")[0].state == WaveState.CANCELED
    stuck = [r.run_id for r in app.runs.all() if r.status == RunStatus.QUEUED and not r.released]
    assert not stuck, f"{stuck} Queued forever in a Canceled wave"


def test_a_resume_that_fails_part_way_is_finished_by_resuming_again(tmp_path):
    app = FakeApp(tmp_path, REGISTRY, Brakes(max_running=2, wave_max_running=2, breaker_first_failures=3))
    names = [f"app{n}" for n in range(6)]
    for name in names:
        add_task(app, name, ["base"], output=f"{name}:{{{{.Run.ID}}}}")
    push(app, "base")
    play(app, fail=set(names))
    assert app.wave_store.get("w1")[0].state == WaveState.HELD
    real = life_mod.transition
    def crash(*a, **k):
        raise Boom()
    life_mod.transition = crash
    try:
        with pytest.raises(Boom):
            app.waves.resume("w1")
    finally:
        life_mod.transition = real
    app.lifecycle.sweep()
    assert app.wave_store.get("w1")[0].state == WaveState.HELD  # the resume did not take
    app.waves.resume("w1")  # the operator retries
    held = [r.run_id for r in app.runs.all() if r.status == RunStatus.HELD]
    assert not held, f"{held} Held forever in an Active wave"


def test_housekeeping_leaves_alone_the_places_of_runs_being_released(tmp_path):
    app = FakeApp(tmp_path, REGISTRY, Brakes(max_running=2, wave_max_running=2))
    for n in range(2):
        add_task(app, f"a{n}", ["base-a"], output=f"a{n}:{{{{.Run.ID}}}}")
        add_task(app, f"b{n}", ["base-b"], output=f"b{n}:{{{{.Run.ID}}}}")
    real = app.wave_store.create
    def create(wave, members):  # housekeeping runs while the first wave is being written
        app.lifecycle.reconcile()
        real(wave, members)
    app.wave_store.create = create
    push(app, "base-a")
    app.wave_store.create = real
    push(app, "base-b")
    # 2 runs of the first wave have messages; the cap is 2 – so the second wave may send none
    assert len(app.queue.sent) <= 2, f"{len(app.queue.sent)} runs sent with max_running=2"


def test_a_canceled_build_keeps_its_places_until_it_stops(tmp_path):
    app = FakeApp(tmp_path, REGISTRY, Brakes(max_running=1, wave_max_running=1))
    add_task(app, "a0", ["base-a"], output="a0:{{.Run.ID}}")
    add_task(app, "b0", ["base-b"], output="b0:{{.Run.ID}}")
    push(app, "base-a")
    push(app, "base-b")
    (a_run,) = app.queue.sent
    def during(request):  # the operator cancels wave w1 while a0 builds
        app.waves.cancel("w1")
        assert len(app.queue.sent) == 1, "b0 released while a0 still builds: global cap 1 exceeded"
    app.builder.during = during
    app.worker.execute(a_run)


def test_runs_of_a_wave_that_was_never_recorded_are_released_by_housekeeping(tmp_path, monkeypatch):
    # The dispatch that started the wave recorded its runs, then failed before the wave's row.
    from shared.service_layer import run_life as life_mod

    app = FakeApp(tmp_path, REGISTRY, Brakes(max_running=5, wave_max_running=1))
    for n in range(3):
        add_task(app, f"app{n}", ["base"], output=f"app{n}:{{{{.Run.ID}}}}")
    real = app.wave_store.create
    app.wave_store.create = lambda wave, members: (_ for _ in ()).throw(Boom())
    with pytest.raises(Boom):
        push(app, "base")
    app.wave_store.create = real
    waiting = [r.run_id for r in app.runs.all() if not r.released]
    assert len(waiting) == 2 and not app.waves.recorded("w1")
    monkeypatch.setattr(life_mod, "UNSENT_AFTER", timedelta(0))
    app.lifecycle.sweep()
    assert set(waiting) <= set(app.queue.sent)
    assert all(app.runs.get(r)[0].wave_id is None for r in waiting)
    app.lifecycle.sweep()  # again: nothing is sent twice
    assert len(app.queue.sent) == len(set(app.queue.sent))


# ---- a task in two waves; a join that stops short ----------------------------------------------
def test_a_task_waiting_in_one_wave_coalesces_when_another_wave_reaches_it(app):
    # app is built FROM two mids, each FROM a base of its own. The first base's wave plans app (and
    # top, built FROM app) waiting for mid1; the second base's wave reaches app deeper down while
    # it still waits there: app is not given a second run, its waiting run builds on both mids.
    add_task(app, "mid1", ["base1"])
    add_task(app, "mid2", ["base2"])
    add_task(app, "app", ["mid1", "mid2"])
    add_task(app, "top", ["app"])
    push(app, "base1")
    push(app, "base2")
    assert sorted(r.task or "" for r in app.runs.all()) == ["app", "mid1", "mid2", "top"]
    order = play(app)
    assert sorted(order) == ["app", "mid1", "mid2", "top"]
    assert order.index("app") > max(order.index("mid1"), order.index("mid2"))
    assert order.index("top") > order.index("app")
    coalesced = [t for d in app.decisions.decisions for t in d.tasks if t.outcome == Outcome.COALESCED]
    assert [t.task for t in coalesced] == ["app"] and "waits in wave w1" in coalesced[0].reason
    assert {w.state for w in app.wave_store.newest()[0]} == {WaveState.DONE}


def test_a_task_whose_waiting_run_started_already_is_rebuilt_by_the_other_wave(app):
    # The same graph, but app's run in the first wave is built before mid2's push arrives: that
    # build could not see the new mid2, so app builds again, in the second wave.
    add_task(app, "mid1", ["base1"])
    add_task(app, "mid2", ["base2"])
    add_task(app, "app", ["mid1", "mid2"])
    push(app, "base1")
    push(app, "base2")
    (mid1_run, mid2_run) = app.queue.sent
    app.builder.result = BuildResult(RunStatus.SUCCEEDED, output_digest="sha256:" + "a" * 64)
    app.worker.execute(mid1_run)
    push(app, "mid1", "sha256:" + "a" * 64)
    (app_run,) = app.queue.sent[2:]
    app.worker.execute(app_run)  # app builds in the first wave, on the old mid2
    app.worker.execute(mid2_run)
    push(app, "mid2", "sha256:" + "a" * 64)
    app_runs, _ = app.runs.newest(task="app")
    assert len(app_runs) == 2 and app_runs[0].run_id in app.queue.sent and app_runs[0].wave_id != "w1"


def _join_that_crashes_before_its_member(app) -> ImagePushed:
    """mid's wave; `late`, built FROM mid, is created after the wave was planned, so it joins when
    mid's push arrives. That dispatch records late's run and crashes before adding its member."""
    add_task(app, "mid", ["base"])
    push(app, "base")
    add_task(app, "late", ["mid"])
    (mid_run,) = app.queue.sent
    app.builder.result = BuildResult(RunStatus.SUCCEEDED, output_digest="sha256:" + "b" * 64)
    app.worker.execute(mid_run)
    real = app.wave_store.add_member
    app.wave_store.add_member = lambda member: (_ for _ in ()).throw(Boom())
    event = ImagePushed("push-mid", REGISTRY, "mid", "latest", "sha256:" + "b" * 64, datetime.now(UTC),
                        EventSource.DISTRIBUTION)
    with pytest.raises(Boom):
        app.dispatcher.handle(event)
    app.wave_store.add_member = real
    return event


def test_a_join_that_crashed_before_its_member_is_finished_by_the_redelivery(app):
    event = _join_that_crashes_before_its_member(app)
    decision = app.dispatcher.handle(event)  # the sender delivers again
    late_runs = [r for r in app.runs.all() if r.task == "late"]
    assert len(late_runs) == 1, "the redelivery recorded a second run; the first stays Queued forever"
    assert decision.runs == [late_runs[0].run_id]
    assert app.wave_store.member("w1", "late").run_id == late_runs[0].run_id
    assert late_runs[0].run_id in app.queue.sent


def test_a_join_that_crashed_before_its_member_leaves_no_stray_after_housekeeping(app, monkeypatch):
    from shared.service_layer import run_life as life_mod

    _join_that_crashes_before_its_member(app)  # and no redelivery comes
    monkeypatch.setattr(life_mod, "UNSENT_AFTER", timedelta(0))
    app.lifecycle.sweep()
    (late,) = [r for r in app.runs.all() if r.task == "late"]
    assert late.status == RunStatus.CANCELED and "no member of wave w1" in (late.reason or "")
    assert late.run_id not in app.queue.sent


# ---- the wave's counts move with each member, never by rereading all of them --------------------
def test_a_run_s_end_moves_the_wave_s_counts_without_reading_every_member(tmp_path):
    app = FakeApp(tmp_path, REGISTRY, Brakes(max_running=3, wave_max_running=3))
    for n in range(12):
        add_task(app, f"app{n}", ["base"], output=f"app{n}:{{{{.Run.ID}}}}")
    push(app, "base")
    assert app.wave_store.get("w1")[0].counts == {"Queued": 3, "Waiting": 9}
    reads = []
    real = app.wave_store.members
    app.wave_store.members = lambda wave_id: reads.append(wave_id) or real(wave_id)
    (first, *_) = app.queue.sent
    app.builder.result = BuildResult(RunStatus.SUCCEEDED, output_digest=DIGEST)
    app.worker.execute(first)
    assert reads == [], "a run's end reread every member of its wave"
    assert app.wave_store.get("w1")[0].counts == {"Queued": 3, "Waiting": 8, "Succeeded": 1}
    play(app)
    wave = app.wave_store.get("w1")[0]
    assert wave.counts == {"Succeeded": 12} and wave.state == WaveState.DONE
    assert reads == [], f"every run's end reread the wave's members ({len(reads)} reads)"


def test_housekeeping_recounts_a_wave_whose_count_a_crash_left_short(tmp_path):
    app = FakeApp(tmp_path, REGISTRY, Brakes(max_running=1, wave_max_running=1))
    for n in range(3):
        add_task(app, f"app{n}", ["base"], output=f"app{n}:{{{{.Run.ID}}}}")
    push(app, "base")
    (first,) = app.queue.sent
    real = app.wave_store.save
    def crash(wave, etag):  # the instance dies after the member's outcome, before its count
        if wave.counts == app.wave_store.get(wave.wave_id)[0].counts:
            return real(wave, etag)  # another write of the wave row (the base change noted)
        raise Boom()
    app.wave_store.save = crash
    app.builder.result = BuildResult(RunStatus.SUCCEEDED, output_digest=DIGEST)
    with pytest.raises(Boom):
        app.worker.execute(first)
    app.wave_store.save = real
    assert app.wave_store.get("w1")[0].counts == {"Queued": 1, "Waiting": 2}  # short of the end
    app.lifecycle.sweep()
    assert app.wave_store.get("w1")[0].counts == {"Succeeded": 1, "Queued": 1, "Waiting": 1}
    play(app)
    assert app.wave_store.get("w1")[0].state == WaveState.DONE


def test_housekeeping_reads_no_members_of_a_wave_whose_runs_wait_for_their_places(tmp_path, monkeypatch):
    # A big wave's runs wait for places for hours; housekeeping looks for strays among them every
    # minute, and reads the wave's members only when it has more waiting runs than waiting members.
    app = FakeApp(tmp_path, REGISTRY, Brakes(max_running=2, wave_max_running=2))
    for n in range(30):
        add_task(app, f"app{n:02d}", ["base"], output=f"app{n:02d}:{{{{.Run.ID}}}}")
    push(app, "base")
    monkeypatch.setattr(life_mod, "UNSENT_AFTER", timedelta(0))
    reads = []
    real = app.wave_store.members
    app.wave_store.members = lambda wave_id: reads.append(wave_id) or real(wave_id)
    monkeypatch.setattr(app.waves, "catch_up", lambda: None)  # its recount is a read of its own
    app.lifecycle.sweep()
    assert reads == [], "housekeeping read every member of a waiting wave"
    assert not [r for r in app.runs.all() if r.status == RunStatus.CANCELED]


def test_a_run_says_the_platform_its_task_builds(tmp_path):
    app = FakeApp(tmp_path, REGISTRY)
    arm = add_task(app, "arm", ["base"])
    arm.platform = "linux/arm64"
    app.task_store.save(arm)
    app.index.sync_task(arm, previous=arm.dependencies)
    add_task(app, "amd", ["base"])
    decision = push(app, "base")
    platforms = {app.runs.get(run_id)[0].task: app.runs.get(run_id)[0].platform for run_id in decision.runs}
    assert platforms == {"arm": "linux/arm64", "amd": "linux"}
    assert app.scheduler.run_task("arm").platform == "linux/arm64"  # a manual run too


# ---- one push under two tags: one wave -------------------------------------------------------
def push_tag(app: FakeApp, tag: str, event_id: str, digest: str = DIGEST):
    return app.dispatcher.handle(ImagePushed(event_id, REGISTRY, "base", tag, digest, datetime.now(UTC),
                                             EventSource.DISTRIBUTION))


def add_on_tags(app: FakeApp, name: str, tags: list[str]) -> None:
    task = Task(name=name, images=[f"{name}:latest"], context=f"/ctx/{name}",
                dependencies=[Dependency(f"{REGISTRY}/base:{t}", "sha256:" + "0" * 64, True) for t in tags])
    app.sources.dockerfiles[task.context] = "".join(f"FROM {REGISTRY}/base:{t}\n" for t in tags)
    app.task_store.create(task)
    app.index.sync_task(task, previous=[])


def test_a_digest_pushed_under_two_tags_starts_one_wave_and_each_task_builds_once(app):
    add_on_tags(app, "on-12", ["1.2"])
    add_on_tags(app, "on-latest", ["latest"])
    add_on_tags(app, "on-both", ["1.2", "latest"])
    add_task(app, "deeper", ["on-latest"])  # built on a task the second tag's push queues
    first = push_tag(app, "1.2", "push-1.2")
    second = push_tag(app, "latest", "push-latest")
    (wave,) = app.wave_store.newest()[0]
    assert wave.root == f"{REGISTRY}/base:1.2@{DIGEST}"
    assert f"joined wave {wave.wave_id} of the same digest" in second.reason
    joined = {t.task: t for t in second.tasks}
    assert joined["on-latest"].outcome == Outcome.QUEUED
    assert f"joins wave {wave.wave_id} of the same digest" in joined["on-latest"].reason
    assert joined["on-both"].outcome == Outcome.IN_WAVE  # queued by the first tag's push already
    assert app.runs.get(joined["on-latest"].run_id or "")[0].wave_id == wave.wave_id
    # A redelivery, and another delivery of the same tag, start nothing more.
    assert push_tag(app, "latest", "push-latest") == second
    assert {t.outcome for t in push_tag(app, "latest", "push-latest-again").tasks} <= {
        Outcome.ALREADY_TRIGGERED, Outcome.IN_WAVE}
    built = play(app)
    assert sorted(built) == ["deeper", "on-12", "on-both", "on-latest"]  # each exactly once
    assert len(app.wave_store.newest()[0]) == 1
    assert app.wave_store.get(wave.wave_id)[0].state == WaveState.DONE
    assert first.outcome == Outcome.QUEUED and len(app.builder.requests) == 4


def test_housekeeping_reads_a_quiet_waves_members_once_per_pass(tmp_path):
    # A big wave's members are thousands of rows: each minute's recount reads them once, not twice.
    app, _, _ = one_running_one_waiting(tmp_path)
    reads = []
    members = app.wave_store.members
    app.wave_store.members = lambda wave_id: reads.append(wave_id) or members(wave_id)
    app.lifecycle.waves.catch_up()
    assert reads == ["w1"]
