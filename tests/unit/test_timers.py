"""Task timers on fakes: one run per slot, whoever ticks and however often; missed slots covered by
one run; schedules checked before anything is stored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.domain.images import render
from shared.domain.tasks import Task, TaskError
from shared.domain.timers import TaskTimer, check_schedule, latest_slot
from shared.domain.vocabulary import Trigger
from shared.service_layer.task_timers import TaskTimers, TimerNotFound
from tests.fakes import FakeApp

REGISTRY = "localhost:5000"
SINCE = datetime(2024, 5, 1, 20, 0, tzinfo=UTC)


@pytest.fixture
def app(tmp_path):
    app = FakeApp(tmp_path, REGISTRY)
    app.task_store.create(Task(name="app", images=["app:{{.Run.ID}}"], context="/ctx",
                               timers=[TaskTimer("nightly", "0 21 * * *", since=SINCE)]))
    return app


def timer_runs(app):
    return [r for r in app.runs.all() if r.trigger == Trigger.TIMER]


def test_a_slot_starts_one_run_however_many_ticks_and_instances_see_it(app):
    assert not app.timers.tick(SINCE + timedelta(minutes=59)).decisions  # before 21:00: nothing
    first = app.timers.tick(SINCE + timedelta(hours=1, seconds=5)).decisions
    assert [d.outcome for d in first] == ["queued"]
    for seconds in (20, 40, 59):  # later ticks, as a restarted host or a second instance would
        app.timers.tick(SINCE + timedelta(hours=1, seconds=seconds))
    (run,) = timer_runs(app)
    assert run.task == "app" and "slot 2024-05-01T21:00:00Z" in (run.cause or "")
    app.timers.tick(SINCE + timedelta(days=1, hours=1, seconds=1))  # the next night's slot
    assert len(timer_runs(app)) == 2


def test_a_crash_after_the_run_before_the_slot_is_recorded_starts_nothing_again(app):
    app.timers.tick(SINCE + timedelta(hours=1, seconds=5))
    app.timer_slots.slots.clear()  # the last slot was never written (the instance died)
    app.timers.tick(SINCE + timedelta(hours=1, seconds=30))
    assert len(timer_runs(app)) == 1
    assert app.timer_slots.last("app", "nightly") == SINCE + timedelta(hours=1)


def test_slots_missed_while_nothing_ran_are_covered_by_one_run_that_says_so(app):
    decisions = app.timers.tick(SINCE + timedelta(days=3, hours=2)).decisions
    (run,) = timer_runs(app)
    assert "slot 2024-05-04T21:00:00Z" in (run.cause or "") and "covers 3 earlier" in decisions[0].reason


def test_a_disabled_timer_starts_nothing_and_a_new_schedule_no_past_slot(app):
    timers = TaskTimers(app.task_store)
    timers.update("app", "nightly", enabled=False)
    app.timers.tick(SINCE + timedelta(hours=1, seconds=5))
    assert not timer_runs(app)
    timers.update("app", "NIGHTLY", enabled=True, schedule="*/5 * * * *")
    (timer,) = timers.of("app")
    assert timer.since > SINCE  # re-enabled now: the slots it was off for are not run
    with pytest.raises(TimerNotFound):
        timers.remove("app", "weekly")


def test_timer_names_and_schedules_are_checked_before_they_are_stored(app):
    timers = TaskTimers(app.task_store)
    for name, schedule in (("bad name", "0 21 * * *"), ("ok", "61 * * * *"), ("ok", "0 21 * *"),
                           ("nightly", "0 22 * * *")):
        with pytest.raises(TaskError):
            timers.add("app", name, schedule)
    assert [t.name for t in timers.of("app")] == ["nightly"]
    assert check_schedule("0  21 * * *") == "0 21 * * *"


def test_latest_slot_counts_the_slots_of_a_span():
    slot, count = latest_slot("*/10 * * * * *", SINCE, SINCE + timedelta(seconds=35))
    assert slot == SINCE + timedelta(seconds=30) and count == 3
    assert latest_slot("0 21 * * *", SINCE, SINCE + timedelta(minutes=30)) == (None, 0)


def test_templates_name_the_commit_and_branch_of_a_source_run():
    assert render("app:{{.Run.Commit}}", "da1", REGISTRY, commit="abc123") == f"{REGISTRY}/app:abc123"
    assert render("app/{{ .Run.Branch }}:{{.Run.ID}}", "da2", REGISTRY, branch="main") == \
        f"{REGISTRY}/app/main:da2"
