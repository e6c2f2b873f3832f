"""The dispatcher's rules on in-memory fakes: every decision outcome, redelivery and lost races."""

import threading
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from shared.domain.events import Ignored, ImagePushed
from shared.domain.runs import Run
from shared.domain.tasks import Dependency, Task
from shared.domain.vocabulary import EventSource, Outcome, RunStatus, Trigger
from tests.fakes import FakeApp

REGISTRY = "localhost:5000"
BASE = f"{REGISTRY}/base:1"
OLD, NEW = "sha256:" + "0" * 64, "sha256:" + "1" * 64


@pytest.fixture
def app(tmp_path):
    return FakeApp(tmp_path, REGISTRY)


def add_task(app, name="app", digest=OLD, runtime=True, images=None, **fields):
    """A task indexed under BASE, as TaskService leaves it after creation."""
    task = Task(name=name, images=images or [f"{name}:{{{{.Run.ID}}}}"], context="/ctx",
                dependencies=[Dependency(BASE, digest, runtime)], **fields)
    app.task_store.create(task)
    app.index.sync_task(task, previous=[])
    return task


def push(digest=NEW, event_id="e1", repository="base", tag="1"):
    return ImagePushed(event_id, REGISTRY, repository, tag, digest, datetime.now(UTC),
                       EventSource.DISTRIBUTION)


def test_a_new_digest_queues_one_run_recorded_before_its_message(app):
    add_task(app)
    decision = app.dispatcher.handle(push())
    assert decision.outcome == Outcome.QUEUED and decision.runs == ["da1"]
    run, _ = app.runs.get("da1")
    assert (run.status, run.trigger, run.task) == (RunStatus.QUEUED, Trigger.IMAGE_UPDATE, "app")
    assert run.cause == f"{BASE}@{NEW}" and run.output_images == [f"{REGISTRY}/app:da1"]
    assert app.queue.sent == ["da1"]
    assert app.decisions.decisions == [decision]


def test_no_dependents(app):
    decision = app.dispatcher.handle(push())
    assert decision.outcome == Outcome.NO_DEPENDENTS and not app.queue.sent


def test_the_digest_the_task_built_on_is_unchanged(app):
    add_task(app, digest=NEW)
    assert app.dispatcher.handle(push()).outcome == Outcome.DIGEST_UNCHANGED
    assert app.runs.all() == []


def test_a_disabled_trigger(app):
    add_task(app, trigger_enabled=False)
    assert app.dispatcher.handle(push()).outcome == Outcome.TRIGGER_DISABLED


def test_a_build_stage_base_under_a_runtime_trigger(app):
    add_task(app, runtime=False)
    assert app.dispatcher.handle(push()).outcome == Outcome.NOT_RUNTIME


def test_the_task_own_output_never_triggers_it(app):
    add_task(app, images=[BASE])
    assert app.dispatcher.handle(push()).outcome == Outcome.OWN_OUTPUT


def test_a_push_made_by_a_run_is_recorded_as_that_run_output(app):
    app.runs.create_many([Run("da9", RunStatus.SUCCEEDED, Trigger.MANUAL, task="producer",
                              output_images=[BASE], output_digest=NEW)])
    decision = app.dispatcher.handle(push())
    assert (decision.outcome, decision.runs) == (Outcome.OWN_OUTPUT, ["da9"])
    add_task(app, name="producer")
    assert app.dispatcher.handle(push(event_id="e2")).tasks[0].outcome == Outcome.OWN_OUTPUT


def test_a_redelivered_event_gets_its_first_decision_and_no_second_run(app):
    add_task(app)
    first = app.dispatcher.handle(push())
    assert app.dispatcher.handle(push()) is first
    assert len(app.runs.all()) == 1 and app.queue.sent == ["da1"]


def test_the_same_digest_under_a_new_event_id_is_already_triggered(app):
    add_task(app)
    app.dispatcher.handle(push())
    decision = app.dispatcher.handle(push(event_id="e2"))
    assert decision.outcome == Outcome.ALREADY_TRIGGERED
    assert len(app.runs.all()) == 1


def test_a_newer_digest_coalesces_into_the_queued_run(app):
    add_task(app)
    app.dispatcher.handle(push())
    decision = app.dispatcher.handle(push(digest="sha256:" + "2" * 64, event_id="e2"))
    assert decision.outcome == Outcome.COALESCED and decision.tasks[0].run_id == "da1"
    assert len(app.runs.all()) == 1


def test_a_newer_digest_after_the_run_started_queues_a_new_run(app):
    add_task(app)
    app.dispatcher.handle(push())
    app.worker.execute("da1")
    decision = app.dispatcher.handle(push(digest="sha256:" + "2" * 64, event_id="e2"))
    assert decision.outcome == Outcome.QUEUED and decision.runs == ["da2"]


def test_a_claimed_run_that_was_never_recorded_is_recorded_under_its_id(app):
    add_task(app)
    row = app.table.get(BASE, "app")
    row.pending_run_id, row.triggered_digest = "da7", NEW
    app.table.update_if_unchanged(row)
    decision = app.dispatcher.handle(push())
    assert decision.outcome == Outcome.QUEUED and decision.runs == ["da7"]
    assert "recorded now" in decision.tasks[0].reason
    assert app.runs.get("da7")[0].status == RunStatus.QUEUED


def test_a_lost_claim_is_decided_again_on_the_fresh_row(app):
    add_task(app)
    claim = app.table.claim

    def a_concurrent_dispatch_wins_first(rows):
        # Another dispatcher of the same push claimed the row between our read and our claim.
        row = app.table.get(BASE, "app")
        row.pending_run_id, row.triggered_digest = "da99", NEW
        app.table.update_if_unchanged(row)
        app.runs.create_many([Run("da99", RunStatus.QUEUED, Trigger.IMAGE_UPDATE, task="app")])
        app.table.claim = claim
        return claim(rows)

    app.table.claim = a_concurrent_dispatch_wins_first
    decision = app.dispatcher.handle(push())
    assert decision.outcome == Outcome.ALREADY_TRIGGERED
    assert [r.run_id for r in app.runs.all()] == ["da99"]


def test_mixed_outcomes_without_a_run_are_not_queued(app):
    add_task(app, name="a", digest=NEW)
    add_task(app, name="b", trigger_enabled=False)
    decision = app.dispatcher.handle(push())
    assert decision.outcome == Outcome.NOT_QUEUED
    assert {t.task: t.outcome for t in decision.tasks} == {"a": Outcome.DIGEST_UNCHANGED,
                                                           "b": Outcome.TRIGGER_DISABLED}


def test_a_task_whose_image_no_longer_renders_is_rejected_alone(app):
    add_task(app, name="good")
    add_task(app, name="bad", images=["UPPER/Case:{{.Run.ID}}"])
    decision = app.dispatcher.handle(push())
    outcomes = {t.task: t.outcome for t in decision.tasks}
    assert outcomes == {"good": Outcome.QUEUED, "bad": Outcome.REJECTED}


def test_ignored_events_are_recorded_once(app):
    ignored = Ignored("e5", "blob push, not a manifest", EventSource.DISTRIBUTION)
    first = app.dispatcher.handle(ignored)
    assert first.outcome == Outcome.IGNORED
    assert app.dispatcher.handle(ignored) is first
    assert app.decisions.decisions == [first]


def test_a_malformed_event_is_rejected_and_recorded(app):
    decision = app.dispatcher.reject("(envelope)", EventSource.DISTRIBUTION, "not JSON")
    assert decision.outcome == Outcome.REJECTED and app.decisions.decisions == [decision]


def test_a_batch_goes_on_past_an_event_that_fails(app):
    add_task(app)
    events = [push(event_id="bad", repository="base"), push(event_id="good")]
    dependents = app.table.dependents

    def storage_fails_once(base):
        app.table.dependents = dependents
        raise OSError("storage down")

    app.table.dependents = storage_fails_once
    from shared.service_layer.dispatch import DispatchIncomplete
    from shared.service_layer.ingest import Ingest

    with pytest.raises(DispatchIncomplete, match="1 event"):
        Ingest(app.registry, app.dispatcher, app.decisions).receive(events)
    assert [d.event_id for d in app.decisions.decisions] == ["good"]


def test_deliveries_waiting_for_a_busy_event_leave_the_dispatcher_free_for_others(app):
    # Another delivery is dispatching e1 (its claim is taken, no decision yet). Deliveries of e1 that
    # wait for its decision must not hold the dispatcher's readers: e2 is decided meanwhile, and the
    # waiting deliveries then get e1's decision (before, three of them took every reader for their
    # whole wait, and every dispatch behind them stalled until they gave up with EventBusy).
    add_task(app)
    app.claims.begin("e1")
    answers: list = []
    waiting = [threading.Thread(target=lambda: answers.append(app.dispatcher.handle(push(event_id="e1"))))
               for _ in range(3)]
    for thread in waiting:
        thread.start()
    other = app.dispatcher.handle(push(NEW, event_id="e2", repository="other"))
    assert other.outcome == Outcome.NO_DEPENDENTS
    assert all(thread.is_alive() for thread in waiting)  # still waiting for e1: they did not give up
    first = app.dispatcher.handle(push(event_id="e1-again"))  # stands in for e1's dispatcher
    app.decisions.record(replace(first, event_id="e1"))
    for thread in waiting:
        thread.join()
    assert [a.event_id for a in answers] == ["e1"] * 3


def test_a_redelivery_sends_the_messages_a_failed_dispatch_left_unsent_and_no_other(app):
    """Issue 21: storage went away as dispatch sent the first messages of a wave (runs recorded,
    4 released): redeliveries answered already-triggered and sent nothing, so every run stayed
    Queued until housekeeping's 10-minute resend."""
    for n in range(30):
        add_task(app, name=f"t{n}")
    send = app.queue.send

    def storage_gone(run_ids):
        raise OSError("storage went away")

    app.queue.send = storage_gone
    with pytest.raises(OSError):
        app.dispatcher.handle(push())
    recorded = app.runs.all()
    released = sorted(r.run_id for r in recorded if r.released)
    assert len(recorded) == 30 and len(released) == 4 and not app.queue.sent
    app.queue.send = send

    again = app.dispatcher.handle(push())  # the sender delivers again
    assert again.outcome == Outcome.ALREADY_TRIGGERED
    assert sorted(app.queue.sent) == released  # the missing messages, once each
    assert all(app.runs.get(r)[0].unsent_since is None for r in released)
    app.dispatcher.handle(push(event_id="e2"))  # the same push again, under another id
    assert sorted(app.queue.sent) == released  # nothing sent twice
    assert len(app.runs.all()) == 30
