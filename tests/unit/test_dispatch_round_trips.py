"""What a push waits for before it answers (issue 15, push -> queued at N=1): storage steps that
do not depend on each other go side by side, and none that a guarantee needs is skipped.

"Side by side" is shown with a barrier the two steps must both reach: steps made one after the
other never meet there, and the barrier breaks (its timeout only ends a failing test; nothing here
is timed).
"""

import threading
from datetime import UTC, datetime

import pytest

from shared.domain.events import ImagePushed
from shared.domain.tasks import Dependency, Task
from shared.domain.vocabulary import EventSource, Outcome
from shared.domain.waves import Brakes
from shared.service_layer.waves import GLOBAL
from tests.fakes import FakeApp

REGISTRY = "localhost:5000"
BASE = f"{REGISTRY}/base:1"
OLD, NEW = "sha256:" + "0" * 64, "sha256:" + "1" * 64
GUARD_SECONDS = 10  # only a failing test waits this long


@pytest.fixture
def app(tmp_path):
    return FakeApp(tmp_path, REGISTRY)


def add_task(app, name="app"):
    task = Task(name=name, images=[f"{name}:{{{{.Run.ID}}}}"], context="/ctx",
                dependencies=[Dependency(BASE, OLD, True)])
    app.task_store.create(task)
    app.index.sync_task(task, previous=[])


def push(event_id="e1", digest=NEW):
    return ImagePushed(event_id, REGISTRY, "base", "1", digest, datetime.now(UTC), EventSource.DISTRIBUTION)


def test_the_quarantine_list_is_read_beside_the_dependents(app):
    add_task(app)
    both = threading.Barrier(2, timeout=GUARD_SECONDS)
    store = app.adapters.quarantine_store
    read_list, read_rows = store.all, app.table.dependents

    def quarantine_list():
        both.wait()
        return read_list()

    def dependents(base):
        if base == BASE:  # the push's own read (the wave's plan reads its outputs' dependents)
            both.wait()
        return read_rows(base)

    store.all, app.table.dependents = quarantine_list, dependents
    decision = app.dispatcher.handle(push())
    assert decision.outcome == Outcome.QUEUED and app.queue.sent == decision.runs


def test_a_quarantine_read_beside_the_rows_still_blocks_the_push(app):
    add_task(app)
    app.quarantine.add(f"{BASE}@{NEW}", "bad base")
    decision = app.dispatcher.handle(push())
    assert decision.outcome == Outcome.QUARANTINED and not app.queue.sent and not app.runs.all()


def test_a_new_wave_run_takes_its_two_places_side_by_side(app):
    add_task(app)
    both = threading.Barrier(2, timeout=GUARD_SECONDS)
    take = app.slots.take

    def take_beside(scope, cap, run_id, first=None, sole=False):
        both.wait()
        return take(scope, cap, run_id, first, sole)

    app.slots.take = take_beside
    decision = app.dispatcher.handle(push())
    assert app.queue.sent == decision.runs == ["da1"]
    assert app.slots.holders(GLOBAL) == ["da1"]


@pytest.mark.parametrize("full", [GLOBAL, "wave"])
def test_a_run_that_gets_one_place_only_gives_it_back_and_waits(tmp_path, full):
    app = FakeApp(tmp_path, REGISTRY, brakes=Brakes(max_running=1, wave_max_running=1))
    add_task(app)
    wave_id = "w1"  # named after its first run, da1
    app.slots.take(GLOBAL if full == GLOBAL else wave_id, 1, "someone-else")
    decision = app.dispatcher.handle(push())
    assert decision.outcome == Outcome.QUEUED and decision.runs == ["da1"]
    assert not app.queue.sent  # it waits for a place, recorded, not released
    run, _ = app.runs.get("da1")
    assert not run.released and run.wave_id == wave_id
    assert "da1" not in app.slots.holders(GLOBAL) + app.slots.holders(wave_id)


def test_the_sent_note_is_written_beside_the_decision_and_before_the_hold_ends(app):
    add_task(app)
    both = threading.Barrier(2, timeout=GUARD_SECONDS)
    record, save, release_push = app.decisions.record, app.runs.save, app.claims.release_push
    seen_at_release = []

    def record_beside(decision, mark_seen=True):
        both.wait()
        record(decision, mark_seen)

    def save_beside(run, etag):
        if run.released and run.unsent_since is None:  # the sent note
            both.wait()
        return save(run, etag)

    def release(push_key, token):
        seen_at_release.append(app.runs.get("da1")[0].unsent_since)
        release_push(push_key, token)

    app.decisions.record, app.runs.save, app.claims.release_push = record_beside, save_beside, release
    decision = app.dispatcher.handle(push())
    assert app.queue.sent == decision.runs == ["da1"]
    assert seen_at_release == [None]  # noted as sent before a redelivery could take the push
    app.decisions.record = record
    # A redelivery under another id finds the run sent: no second message.
    again = app.dispatcher.handle(push(event_id="e2"))
    assert again.outcome == Outcome.ALREADY_TRIGGERED and app.queue.sent == ["da1"]


def test_a_note_that_fails_leaves_the_run_unsent_for_housekeeping_and_the_answer_stands(app):
    add_task(app)
    save = app.runs.save

    def failing_note(run, etag):
        if run.released and run.unsent_since is None:
            raise ConnectionError("storage went away")
        return save(run, etag)

    app.runs.save = failing_note
    decision = app.dispatcher.handle(push())
    assert decision.outcome == Outcome.QUEUED and app.queue.sent == ["da1"]
    assert app.runs.get("da1")[0].unsent_since is not None
    assert app.decisions.seen("e1") == decision

