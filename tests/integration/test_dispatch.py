"""Dispatch against a real Azurite: index reads, run ids, claims, queue messages, decisions."""

from __future__ import annotations

import threading
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from shared.adapters import decision_table
from shared.adapters.dependency_table import to_entity
from shared.domain.decisions import EventBusy
from shared.domain.dependencies import DependencyRow
from shared.domain.events import Ignored, ImagePushed
from shared.domain.image_ref import ImageRef
from shared.domain.messages import decode
from shared.domain.vocabulary import Outcome, RunStatus, Trigger, TriggerType

BASE = "localhost:5000/baseimages/node:9-alpine"
OLD, NEW, NEWER = ("sha256:" + c * 64 for c in "abc")


def push(digest=NEW, event_id=None, ref=("baseimages/node", "9-alpine"), registry="localhost:5000"):
    return ImagePushed(event_id=event_id or str(uuid.uuid4()), registry=registry,
                       repository=ref[0], tag=ref[1], digest=digest,
                       time=datetime.now(UTC), source="distribution")


def add_dependents(services, count=1, **fields):
    """Index rows written whole, dispatch state included (as a crashed dispatcher may leave them)."""
    for n in range(count):
        services.index.table.table.upsert_entity(to_entity(DependencyRow(
            base=BASE, task=f"app{n}", runtime=True, trigger_enabled=True, trigger_type=TriggerType.RUNTIME,
            images=[f"app{n}:{{{{.Run.ID}}}}"], built_digest=OLD, **fields)))


def queued_run_ids(services):
    queue = services.storage.queue(services.settings.build_queue)
    return sorted(decode(m.content) for m in queue.receive_messages(max_messages=32))


def test_a_push_queues_one_run_per_dependent_with_a_decision(services):
    add_dependents(services, 3)
    decision = services.dispatcher.handle(push())
    assert decision.outcome == Outcome.QUEUED and len(decision.runs) == 3
    assert queued_run_ids(services) == sorted(decision.runs)
    run, _ = services.runs.get(decision.runs[0])
    assert (run.status, run.trigger) == (RunStatus.QUEUED, Trigger.IMAGE_UPDATE)
    assert run.cause == f"{BASE}@{NEW}"
    assert run.output_images == [f"{services.settings.registry_host}/{run.task}:{run.run_id}"]
    assert services.decisions.seen(decision.event_id).runs == decision.runs


def test_run_ids_are_short_and_consecutive(services):
    add_dependents(services, 2)
    decision = services.dispatcher.handle(push())
    assert sorted(decision.runs) == ["da1", "da2"]


def test_duplicate_delivery_queues_one_run(services):
    add_dependents(services)
    event = push()
    first = services.dispatcher.handle(event)
    second = services.dispatcher.handle(event)
    assert first.runs == ["da1"] and second.event_id == first.event_id
    assert queued_run_ids(services) == ["da1"]


def test_concurrent_duplicate_deliveries_queue_one_run(services):
    add_dependents(services, 5)
    event = push()
    results = []
    threads = [threading.Thread(target=lambda: results.append(services.dispatcher.handle(event)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4  # every delivery was answered (none raised)
    assert all(r.runs == results[0].runs for r in results)  # every delivery got the one decision
    assert len(results[0].runs) == 5  # one run per task
    listed, _ = services.runs.newest(top=50)
    assert len(listed) == 5


def test_identical_repush_queues_nothing_and_says_why(services):
    add_dependents(services)
    decision = services.dispatcher.handle(push(digest=OLD))
    assert decision.outcome == Outcome.DIGEST_UNCHANGED and decision.runs == []
    assert decision.tasks[0].reason == f"the task last built on {OLD}"
    assert queued_run_ids(services) == []


def test_a_new_digest_while_a_run_waits_is_coalesced_into_it(services):
    add_dependents(services)
    first = services.dispatcher.handle(push(NEW))
    second = services.dispatcher.handle(push(NEWER))
    assert second.outcome == Outcome.COALESCED and second.tasks[0].run_id == first.runs[0]
    # and the same digest pushed again (new event id) is recognised as already triggered
    third = services.dispatcher.handle(push(NEWER))
    assert third.outcome == Outcome.ALREADY_TRIGGERED and third.runs == []


def test_no_dependents_and_ignored_events_are_recorded(services):
    nobody = services.dispatcher.handle(push(ref=("unused/image", "1")))
    assert nobody.outcome == Outcome.NO_DEPENDENTS
    ignored = services.dispatcher.handle(Ignored("ev-ignored", "blob push, not a manifest", "distribution"))
    recent = services.decisions.recent(top=10)
    assert [x.event_id for x in recent][:2] == [ignored.event_id, nobody.event_id]
    assert recent[0].outcome == Outcome.IGNORED


def test_a_push_of_a_runs_output_is_recognised_and_never_retriggers_its_task(services):
    add_dependents(services, 2)
    first = services.dispatcher.handle(push(NEW))
    producer, _ = services.runs.get(first.runs[0])
    # that run pushes its output, which is tagged with the very base the tasks depend on
    services.runs.save(replace(producer, status=RunStatus.RUNNING, output_images=[BASE]), None)
    own = services.dispatcher.handle(push(NEWER))
    outcomes = {t.task: t.outcome for t in own.tasks}
    assert outcomes[producer.task] == Outcome.OWN_OUTPUT
    # and an output image nobody depends on is recorded as the run's output
    lone, _ = services.runs.get(first.runs[1])
    lone = replace(lone, status=RunStatus.RUNNING)  # a run is listed under its images once it has started
    services.runs.save(lone, None)
    image = ImageRef.parse(lone.output_images[0])
    output = services.dispatcher.handle(push(NEW, ref=(image.repository, image.tag), registry=image.registry))
    assert output.outcome == Outcome.OWN_OUTPUT and output.runs == [lone.run_id]


def test_a_run_claimed_but_never_recorded_is_recorded_on_redelivery(services):
    # A delivery claimed the index row for run da41 a moment ago and failed before recording it
    # (storage went away mid-fan-out). The next delivery of that push records it: deliveries of one
    # push dispatch one at a time, so no other is still recording it, however recent the claim.
    add_dependents(services, 1, triggered_digest=NEW, pending_run_id="da41")
    decision = services.dispatcher.handle(push(NEW))
    assert decision.tasks[0].outcome == Outcome.ALREADY_TRIGGERED
    assert "recorded now" in decision.tasks[0].reason
    run, _ = services.runs.get("da41")
    assert (run.status, run.cause) == (RunStatus.QUEUED, f"{BASE}@{NEW}")
    assert queued_run_ids(services) == ["da41"]


def test_an_identical_push_while_the_run_waits_sends_nothing_again(services):
    add_dependents(services)
    first = services.dispatcher.handle(push(NEW))
    again = services.dispatcher.handle(push(NEW))  # same digest, new event id
    assert again.tasks[0].outcome == Outcome.ALREADY_TRIGGERED and again.runs == []
    assert queued_run_ids(services) == first.runs  # one message: a redelivery does not resend
    assert len(services.runs.newest(top=10)[0]) == 1


def burst(services, events, threads=8):
    results, errors = [], []

    def deliver(event):
        try:
            results.append(services.dispatcher.handle(event))
        except Exception as exc:  # noqa: BLE001 - the test counts them
            errors.append(exc)

    workers = [threading.Thread(target=deliver, args=(e,)) for e in events]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return results, errors


def test_a_burst_of_one_event_queues_one_run_per_task_and_burns_no_run_ids(services):
    add_dependents(services, 10)
    event = push()
    results, errors = burst(services, [event] * 12)
    assert errors == [] and len(results) == 12
    assert {tuple(r.runs) for r in results} == {tuple(results[0].runs)}  # all got the one decision
    released = [run_id for run_id in results[0].runs if services.runs.get(run_id)[0].released]
    assert sorted(queued_run_ids(services)) == sorted(released)  # one message per released run
    assert services.runs.allocate(1) == ["da11"]  # ten ids used for ten runs, none burnt


def test_a_burst_of_different_ids_for_one_digest_sends_one_message_per_run(services):
    add_dependents(services, 5)
    first = services.dispatcher.handle(push())
    results, errors = burst(services, [push() for _ in range(10)])
    assert errors == [] and all(r.runs == [] for r in results)
    released = [run_id for run_id in first.runs if services.runs.get(run_id)[0].released]
    assert queued_run_ids(services) == sorted(released)


def test_a_burst_of_one_push_under_many_ids_queues_one_run_per_task_and_burns_no_run_ids(services):
    # Two ingresses (or a registry's two endpoints) deliver one push under different event ids, all
    # at once: one delivery dispatches it, the others wait for it and find the runs pending.
    add_dependents(services, 10)
    (before,) = services.runs.allocate(1)
    results, errors = burst(services, [push() for _ in range(8)])
    assert errors == [] and len(results) == 8
    runs = [run_id for r in results for run_id in r.runs]
    assert len(runs) == 10 and len(set(runs)) == 10
    (after,) = services.runs.allocate(1)
    assert services.runs.ids.counter(after) - services.runs.ids.counter(before) == 11  # none burnt


def test_a_push_is_held_by_one_delivery_at_a_time(services, monkeypatch):
    log = services.decisions
    push_ref = f"{BASE}@{NEW}-{uuid.uuid4().hex}"
    token = log.hold_push(push_ref)
    with pytest.raises(EventBusy):
        log.hold_push(push_ref)
    log.release_push(push_ref, "W/\"datetime'2000-01-01T00%3A00%3A00Z'\"")  # not its token: kept
    with pytest.raises(EventBusy):
        log.hold_push(push_ref)
    log.release_push(push_ref, token)
    again = log.hold_push(push_ref)  # released: the next delivery takes it at once
    # A holder that went silent is taken over; its late release then leaves the new hold alone.
    monkeypatch.setattr(decision_table, "DISPATCH_STALE_AFTER", timedelta(0))
    taken = log.hold_push(push_ref)
    log.release_push(push_ref, again)
    monkeypatch.setattr(decision_table, "DISPATCH_STALE_AFTER", timedelta(minutes=1))
    with pytest.raises(EventBusy):
        log.hold_push(push_ref)
    log.release_push(push_ref, taken)


def test_list_runs_newest_first_with_task_filter_and_continuation(services):
    add_dependents(services, 3)
    services.dispatcher.handle(push(NEW))
    page, token = services.runs.newest(top=2)
    assert [r.run_id for r in page] == ["da3", "da2"] and token == "da2"
    rest, _ = services.runs.newest(top=2, after=token)
    assert [r.run_id for r in rest] == ["da1"]
    by_task, _ = services.runs.newest(task="app1")
    assert [r.task for r in by_task] == ["app1"]


def test_directory_contexts_are_refused_where_the_builder_is_not_local(tmp_path):
    from shared.bootstrap import Services
    from shared.domain.tasks import Task, TaskError
    from tests.conftest import unique_settings

    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    cloud = Services(unique_settings(BASETRIGGER_BUILDER="acr"))
    with pytest.raises(TaskError, match="does not read the directory"):
        cloud.tasks.create(Task(name="local", images=["x:1"], context=str(tmp_path)))


def test_one_digest_pushed_under_two_tags_at_once_is_one_wave_one_run_per_task(services):
    # The registry delivers `9-alpine` and `latest` of one push together, each a few times: the
    # deliveries hold the digest one at a time, and the second tag's tasks join the first's wave.
    latest = "localhost:5000/baseimages/node:latest"
    add_dependents(services, 3)
    for n in range(3):
        services.index.table.table.upsert_entity(to_entity(DependencyRow(
            base=latest, task=f"web{n}", runtime=True, trigger_enabled=True,
            trigger_type=TriggerType.RUNTIME, images=[f"web{n}:{{{{.Run.ID}}}}"], built_digest=OLD)))
    (before,) = services.runs.allocate(1)
    events = [push(event_id=f"{tag}-{n}", ref=("baseimages/node", tag))
              for n in range(3) for tag in ("9-alpine", "latest")]
    results, errors = burst(services, events)
    assert errors == [] and len(results) == 6
    runs = {run_id for r in results for run_id in r.runs}
    assert len(runs) == 6  # one run per task, whichever tag's delivery queued it
    waves = {services.runs.get(run_id)[0].wave_id for run_id in runs}
    assert len(waves) == 1
    (wave_id,) = waves
    assert sorted(m.task for m in services.waves.waves.members(wave_id)) == [
        "app0", "app1", "app2", "web0", "web1", "web2"]
    joined = [r for r in results if f"joined wave {wave_id} of the same digest" in r.reason]
    assert len(joined) == 1  # the first delivery of the other tag; the rest find its runs pending
    (after,) = services.runs.allocate(1)
    assert services.runs.ids.counter(after) - services.runs.ids.counter(before) == 7  # none burnt
