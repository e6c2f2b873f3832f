"""Run notifications on fakes: one POST per run and event however often the run is delivered or
taken over, signed with the task's secret, retried and then recorded as a failure, never raising
into the build; endpoints checked before anything is stored, secrets never shown."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from shared.domain.builds import BuildResult
from shared.domain.notifications import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    notification_for,
    signature,
)
from shared.domain.tasks import Dependency, Task, TaskError
from shared.domain.vocabulary import Outcome, RunStatus
from shared.service_layer.notifications import DELIVERED, FAILED, RETRY_DELAYS
from shared.service_layer.runs import transition
from tests.fakes import FakeApp

REGISTRY = "localhost:5000"
BASE = f"{REGISTRY}/base:1"
ENDPOINT = "https://hooks.example.com/build?token=abc123"
SECRET = "notify-secret"


@pytest.fixture
def app(tmp_path):
    app = FakeApp(tmp_path, REGISTRY)
    app.sources.dockerfile = f"FROM {BASE}\nRUN true\n"
    task = Task(name="app", images=["app:{{.Run.ID}}"], context="/ctx", dependencies=[Dependency(BASE)],
                update_trigger_endpoint=ENDPOINT, update_trigger_secret=SECRET)
    app.task_store.create(task)
    app.index.sync_task(task, previous=[])
    return app


def bodies(app) -> list[dict]:
    app.notifier.join()
    return [json.loads(body) for _, _, body in app.sender.posts]


def test_a_run_notifies_its_start_and_its_end_once_signed_with_the_tasks_secret(app):
    run_id = app.scheduler.run_task("app").run_id
    app.worker.execute(run_id)
    app.worker.execute(run_id)  # a redelivered message finds the run finished
    sent = bodies(app)
    assert [(b["id"], b["type"], b["run"]["status"]) for b in sent] == [
        (f"{run_id}.started", "run.started", "Running"), (f"{run_id}.ended", "run.ended", "Succeeded")]
    for url, headers, body in app.sender.posts:
        assert url == ENDPOINT
        assert headers[SIGNATURE_HEADER] == signature(SECRET, body)
        assert headers[DELIVERY_HEADER] == json.loads(body)["id"]
        assert headers[EVENT_HEADER] == json.loads(body)["type"]
        assert SECRET.encode() not in body
    assert sent[1]["run"]["task"] == "app" and sent[1]["run"]["trigger"] == "Manual"


def test_a_run_taken_over_by_a_second_attempt_does_not_notify_its_start_again(app):
    run_id = app.scheduler.run_task("app").run_id
    app.worker._claim(run_id, [])  # attempt 1 claims it and dies before building
    app.notifier.run_changed(app.runs.get(run_id)[0])
    transition(app.runs, run_id, lambda r: replace(r, heartbeat_at=None))  # its heartbeat went stale
    app.worker.execute(run_id)  # attempt 2
    assert [b["id"] for b in bodies(app)] == [f"{run_id}.started", f"{run_id}.ended"]


def test_an_endpoint_that_never_answers_is_retried_then_recorded_and_the_run_still_succeeds(app):
    app.sender.failures = -1
    run = app.worker.execute(app.scheduler.run_task("app").run_id)
    app.notifier.join()
    assert run.status == RunStatus.SUCCEEDED
    assert app.sender.tries == 2 * (1 + len(RETRY_DELAYS))  # start and end, each tried every time
    assert {row["state"] for row in app.outbox.rows.values()} == {FAILED}
    failures = [d for d in app.decisions.decisions if d.outcome == Outcome.NOTIFICATION_FAILED]
    assert sorted(d.runs[0] for d in failures) == [run.run_id, run.run_id]
    reason = failures[0].reason
    assert "https://hooks.example.com" in reason and "abc123" not in reason  # the URL's token stays out


def test_a_notification_that_fails_twice_is_delivered_on_a_later_try(app):
    app.sender.failures = 2
    run = app.worker.execute(app.scheduler.run_task("app").run_id)
    app.notifier.join()
    assert len(app.sender.posts) == 2
    assert {row["state"] for row in app.outbox.rows.values()} == {DELIVERED}
    assert not [d for d in app.decisions.decisions if d.outcome == Outcome.NOTIFICATION_FAILED]
    assert run.status == RunStatus.SUCCEEDED


def test_storage_failing_under_the_notifier_does_not_fail_the_build(app):
    def broken(notification):
        raise ConnectionError("storage down")

    app.outbox.add = broken
    run = app.worker.execute(app.scheduler.run_task("app").run_id)
    assert run.status == RunStatus.SUCCEEDED and not app.sender.posts


def test_a_task_without_an_endpoint_stores_and_sends_nothing(app):
    app.task_store.save(replace(app.task_store.get("app"), update_trigger_endpoint=None,
                                update_trigger_secret=None))
    app.worker.execute(app.scheduler.run_task("app").run_id)
    assert not app.outbox.rows and not bodies(app)


def test_a_held_run_notifies_its_end_as_held(app):
    run = app.scheduler.run_task("app")
    held = replace(run, status=RunStatus.HELD, reason="circuit breaker")
    notification = notification_for(held)
    assert notification is not None and notification.notification_id == f"{run.run_id}.held"
    body = json.loads(notification.body)
    assert body["type"] == "run.ended" and body["run"]["status"] == "Held"


def test_what_a_process_that_ended_left_pending_is_sent_by_housekeeping(app):
    from datetime import timedelta

    run = app.scheduler.run_task("app")
    notification = notification_for(replace(run, status=RunStatus.SUCCEEDED))
    assert notification is not None
    app.outbox.add(notification)  # stored, and the process ended before it was sent
    app.outbox.rows[notification.notification_id]["tried_at"] -= timedelta(hours=1)
    assert app.notifier.resend_stale() == [notification.notification_id]
    assert app.notifier.resend_stale() == []  # claimed: a second housekeeping sends nothing
    assert [b["id"] for b in bodies(app)] == [notification.notification_id]


@pytest.mark.parametrize("endpoint, secret, message", [
    ("ftp://example.com/hook", None, "http:// or https://"),
    ("https://user:pw@example.com/hook", None, "must not carry credentials"),
    ("http://169.254.169.254/metadata", None, "must not be the address"),
    ("https://example.com/\nhook", None, "URL of at most"),
    (None, "a-secret", "needs an --update-trigger-endpoint"),
    ("https://example.com/hook", "", "1 to 1024 characters"),
])
def test_bad_endpoints_are_refused_before_anything_is_stored(endpoint, secret, message):
    task = Task(name="app", images=["app:1"], context="/ctx", update_trigger_endpoint=endpoint,
                update_trigger_secret=secret)
    with pytest.raises(TaskError, match=message):
        task.validate()


def test_the_secret_is_never_shown_with_the_task():
    task = Task(name="app", images=["app:1"], context="/ctx", update_trigger_endpoint=ENDPOINT,
                update_trigger_secret=SECRET)
    shown = task.public_dict()
    assert shown["update_trigger"] == {"endpoint": ENDPOINT, "secret": True}
    assert SECRET not in json.dumps(shown)


def test_a_build_result_with_a_failure_notifies_failed(app):
    app.builder.result = BuildResult(RunStatus.FAILED, reason="RUN false")
    run = app.worker.execute(app.scheduler.run_task("app").run_id)
    assert run.status == RunStatus.FAILED
    assert [b["run"]["status"] for b in bodies(app)] == ["Running", "Failed"]


def test_runs_held_by_the_wave_s_breaker_notify_held_and_resumed_ones_start_and_end(tmp_path):
    from shared.domain.waves import Brakes
    from tests.unit.test_waves import add_task, play, push

    app = FakeApp(tmp_path, REGISTRY, Brakes(max_running=2, wave_max_running=2, breaker_first_failures=3))
    names = [f"app{n}" for n in range(6)]
    for name in names:
        add_task(app, name, ["base"], output=f"{name}:{{{{.Run.ID}}}}")
        app.task_store.save(replace(app.task_store.get(name), update_trigger_endpoint=ENDPOINT))
    push(app, "base")
    play(app, fail=set(names))
    held = {r.run_id for r in app.runs.all() if r.status == RunStatus.HELD}
    assert held  # the breaker tripped
    sent = bodies(app)
    held_notes = {b["run"]["id"] for b in sent if b["id"].endswith(".held")}
    assert held_notes == held and all(b["type"] == "run.ended" and b["run"]["status"] == "Held"
                                      for b in sent if b["id"].endswith(".held"))
    assert not [b for b in sent if b["run"]["id"] in held and b["type"] == "run.started"]

    app.waves.resume("w1")
    play(app)
    after = bodies(app)
    for run_id in held:  # resumed: each built, and said so once
        assert [b["type"] for b in after if b["run"]["id"] == run_id] == ["run.ended", "run.started",
                                                                           "run.ended"]
