"""Quarantine on in-memory fakes: a quarantined digest starts nothing (pushes, rebuilds, manual runs),
its release lets the next push through, and a wave's circuit breaker quarantines its digest."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.domain.events import ImagePushed
from shared.domain.quarantine import InvalidQuarantine, NotQuarantined, Quarantined
from shared.domain.vocabulary import EventSource, Outcome, RunStatus, WaveState
from shared.domain.waves import Brakes
from tests.fakes import FakeApp
from tests.unit.test_waves import DIGEST, REGISTRY, add_task, play, push, ref


@pytest.fixture
def app(tmp_path):
    return FakeApp(tmp_path, REGISTRY)


def test_a_quarantined_digest_starts_nothing_and_its_release_lets_the_next_push_through(app):
    add_task(app, "app", ["base"])
    app.quarantine.add(f"{ref('base')}@{DIGEST}", "CVE-2026-1 in openssl")
    blocked = push(app, "base")
    assert (blocked.outcome, blocked.reason) == (Outcome.QUARANTINED, "quarantined: CVE-2026-1 in openssl")
    assert [(t.task, t.outcome) for t in blocked.tasks] == [("app", Outcome.QUARANTINED)]
    assert app.runs.all() == [] and app.queue.sent == []
    assert app.index.dependents(ref("base"))[0].triggered_digest is None  # nothing claimed

    app.quarantine.release(f"{ref('base')}@{DIGEST}")
    again = push(app, "base", n=1)  # the next delivery of a push of that digest
    assert again.outcome == Outcome.QUEUED and len(again.runs) == 1


def test_a_rebuild_on_a_quarantined_digest_starts_nothing(app):
    add_task(app, "app", ["base"])
    app.quarantine.add(f"{ref('base')}@{DIGEST}", "bad base")
    rebuild = ImagePushed("rebuild-1", REGISTRY, "base", "latest", DIGEST, datetime.now(UTC),
                          EventSource.REBUILD)
    decision = app.dispatcher.rebuild(rebuild)
    assert (decision.outcome, decision.reason) == (Outcome.QUARANTINED, "quarantined: bad base")
    assert app.runs.all() == []


def test_only_the_dependents_on_the_quarantined_digest_are_blocked(app):
    add_task(app, "amd", ["base"])
    arm = add_task(app, "arm", ["base"])
    arm.platform = "linux/arm64"
    app.task_store.save(arm)
    app.index.sync_task(arm, previous=arm.dependencies)
    arm64 = "sha256:" + "a" * 64
    app.quarantine.add(f"{ref('base')}@{arm64}", "arm64 build broken")
    index = ImagePushed("push-index", REGISTRY, "base", "latest", DIGEST, datetime.now(UTC),
                        EventSource.DISTRIBUTION,
                        platforms=(("linux/amd64", "sha256:" + "b" * 64), ("linux/arm64", arm64)))
    decision = app.dispatcher.handle(index)
    outcomes = {t.task: t.outcome for t in decision.tasks}
    assert outcomes == {"amd": Outcome.QUEUED, "arm": Outcome.QUARANTINED}
    assert [app.runs.get(r)[0].task for r in decision.runs] == ["amd"]


def test_a_manual_run_on_a_quarantined_base_is_refused_before_a_run_id_is_spent(app):
    add_task(app, "app", ["base"])
    app.registry.digests[ref("base")] = DIGEST
    app.quarantine.add(f"{ref('base')}@{DIGEST}", "bad base")
    with pytest.raises(Quarantined, match="^quarantined: bad base$"):
        app.scheduler.run_task("app")
    (refused,) = app.decisions.decisions
    assert (refused.source, refused.outcome, refused.reason) == (EventSource.MANUAL, Outcome.QUARANTINED,
                                                                 "quarantined: bad base")
    assert (refused.image, refused.digest, refused.tasks[0].task) == (ref("base"), DIGEST, "app")
    app.quarantine.release(f"{ref('base')}@{DIGEST}")
    assert app.scheduler.run_task("app").run_id == "da1"


def test_the_breaker_quarantines_the_digest_its_wave_was_on(tmp_path):
    app = FakeApp(tmp_path, REGISTRY, Brakes(max_running=1, wave_max_running=1, breaker_first_failures=2))
    names = [f"app{n}" for n in range(4)]
    for name in names:
        add_task(app, name, ["base"], output=f"{name}:{{{{.Run.ID}}}}")
    push(app, "base")
    play(app, fail=set(names))
    (entry,) = app.quarantine.entries()
    assert entry.digest == DIGEST and entry.by == "circuit breaker of wave w1"
    assert entry.reason.startswith("circuit breaker: 2 of the 2 builds that finished failed")
    # A task added later, and the same digest pushed again: nothing builds on it.
    add_task(app, "late", ["base"], output="late:{{.Run.ID}}")
    again = push(app, "base", n=1)
    assert again.outcome == Outcome.QUARANTINED and again.reason == entry.decision
    assert not [r for r in app.runs.all() if r.task == "late"]
    assert all(r.status in (RunStatus.FAILED, RunStatus.HELD) for r in app.runs.all())

    # A person resumes the wave (the base is fine after all): the breaker's quarantine is lifted;
    # one set by a person stays.
    app.waves.resume("w1")
    assert app.quarantine.entries() == []
    app.quarantine.add(f"{ref('base')}@{DIGEST}", "a person's reason")
    app.wave_store.waves["w1"][0].state = WaveState.HELD  # held again, as more failures would
    app.waves.resume("w1")
    assert [e.reason for e in app.quarantine.entries()] == ["a person's reason"]


@pytest.mark.parametrize(("target", "reason"), [
    ("node:20", "no digest"), ("node:20@sha256:12", "short digest"), ("Not A Ref@sha256:" + "1" * 64, "x"),
    (f"node:20@{DIGEST}", ""), (f"node:20@{DIGEST}", "   "), (f"node:20@{DIGEST}", "x" * 501), (None, "x")])
def test_bad_quarantine_input_is_refused_with_a_clear_message(app, target, reason):
    with pytest.raises(InvalidQuarantine):
        app.quarantine.add(target, reason)
    assert app.quarantine.entries() == []


def test_releasing_what_is_not_quarantined_says_so(app):
    with pytest.raises(NotQuarantined, match="is not quarantined"):
        app.quarantine.release(f"node:20@{DIGEST}")


def test_a_timer_slot_on_a_quarantined_base_starts_nothing_and_is_decided_once(app):
    """Timer runs go through Scheduler.start_run, not run_task: the quarantine is checked there too."""
    from datetime import timedelta

    from shared.domain.timers import TaskTimer

    since = datetime(2024, 5, 1, 20, 0, tzinfo=UTC)
    task = add_task(app, "app", ["base"])
    task.timers = [TaskTimer("nightly", "0 21 * * *", since=since)]
    app.task_store.save(task)
    app.registry.digests[ref("base")] = DIGEST
    app.quarantine.add(f"{ref('base')}@{DIGEST}", "bad base")
    (decision,) = app.timers.tick(since + timedelta(hours=1, seconds=5)).decisions
    assert (decision.source, decision.outcome, decision.reason) == (EventSource.TIMER, Outcome.QUARANTINED,
                                                                    "quarantined: bad base")
    assert (decision.image, decision.digest, decision.runs) == (f"{ref('base')}", DIGEST, [])
    assert app.runs.all() == [] and app.queue.sent == []
    assert app.runs.allocate(1) == ["da1"]  # no run id was spent on the refused slot


def test_a_commit_run_on_a_quarantined_base_starts_nothing_and_a_redelivery_neither(app):
    from shared.domain.vocabulary import Trigger

    task = add_task(app, "app", ["base"])
    app.registry.digests[ref("base")] = DIGEST
    app.quarantine.add(f"{ref('base')}@{DIGEST}", "bad base")
    for _delivery in (1, 2):
        decision = app.triggered.start("push-abc", EventSource.GITHUB, task, Trigger.COMMIT, "commit abc")
        assert (decision.outcome, decision.reason) == (Outcome.QUARANTINED, "quarantined: bad base")
        assert decision.tasks[0].reason == "commit abc: quarantined: bad base"
    assert app.runs.all() == []
    assert [d.source for d in app.decisions.decisions] == [EventSource.GITHUB]  # no manual refusal
