"""A big push writes no claim on its index rows before it answers (issue 15, item 3): its claims go
in its wave's backlog and are written afterwards (shared.service_layer.run_life), and until then
every dispatch of the base shows them on the rows it reads (shared.service_layer.dispatch): a
redelivery, another digest, `base rebuild`, a wave's own output decide as with the rows written,
make one run per task, send nothing twice and burn no run id."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from shared.domain.decisions import EventBusy
from shared.domain.dependencies import DeferredClaim, DependencyRow
from shared.domain.events import ImagePushed
from shared.domain.vocabulary import EventSource, Outcome, RunStatus, Trigger, TriggerType
from shared.domain.waves import Brakes
from shared.service_layer import dispatch
from tests.fakes import FakeApp
from tests.unit.test_backlog import N, big_wave_app
from tests.unit.test_waves import REGISTRY, add_task, play, ref

BASE = ref("base")
FIRST, SECOND = "sha256:" + "1" * 64, "sha256:" + "2" * 64


def push_event(digest: str, event_id: str) -> ImagePushed:
    return ImagePushed(event_id, REGISTRY, "base", "latest", digest, datetime.now(UTC),
                       EventSource.DISTRIBUTION)


@pytest.fixture
def app(tmp_path, monkeypatch):
    return big_wave_app(tmp_path, monkeypatch)


def index_writes(app: FakeApp) -> list[str]:
    """The tasks whose index rows get a dispatch-state write (claim, coalesce) from now on."""
    written: list[str] = []
    real = app.table.update_if_unchanged

    def update(row: DependencyRow) -> bool:
        written.append(row.task)
        return real(row)

    app.table.update_if_unchanged = update  # type: ignore[method-assign]  # the fake's claim uses it
    return written


def rows(app: FakeApp) -> dict[str, DependencyRow]:
    return {row.task: row for row in app.table.dependents(BASE)}


def assert_unclaimed(app: FakeApp) -> None:
    """The push answered, and its claims are not written yet."""
    assert {(r.pending_run_id, r.triggered_digest) for r in rows(app).values()} == {(None, None)}


def next_id(app: FakeApp) -> int:
    """The counter of the next run id, without spending one."""
    return app.runs.ids.counter(app.runs.allocate(1)[0])


def test_a_big_push_answers_having_written_no_index_row_claim(app):
    written = index_writes(app)
    decision = app.dispatcher.handle(push_event(FIRST, "push-1"))
    assert len(decision.runs) == N and len(app.queue.sent) == 3
    assert written == [], f"{len(written)} index rows were written before the push answered"
    assert {(r.pending_run_id, r.triggered_digest) for r in rows(app).values()} == {(None, None)}
    # Written afterwards, from the wave's backlog: each row names its run and the digest.
    app.lifecycle.record_backlog("w1")
    by_task = {app.runs.get(run_id)[0].task: run_id for run_id in decision.runs}
    assert {task: (row.pending_run_id, row.triggered_digest) for task, row in rows(app).items()} == \
        {task: (run_id, FIRST) for task, run_id in by_task.items()}
    assert app.backlog.waves() == []


def test_a_redelivery_before_the_claims_are_written_makes_nothing_twice(app):
    first = app.dispatcher.handle(push_event(FIRST, "push-1"))
    assert_unclaimed(app)
    before = next_id(app)
    again = app.dispatcher.handle(push_event(FIRST, "push-1-from-another-ingress"))
    assert again.runs == [] and {t.outcome for t in again.tasks} == {Outcome.ALREADY_TRIGGERED}
    assert next_id(app) == before + 1, "the redelivery burnt run ids"
    assert len(app.queue.sent) == 3 and len(first.runs) == N
    assert len({r.task for r in app.lifecycle.reads.newest(top=1000)[0]}) == N  # one run per task


def test_another_digest_before_the_claims_are_written_coalesces_into_the_queued_runs(app):
    first = app.dispatcher.handle(push_event(FIRST, "push-1"))
    assert_unclaimed(app)
    before = next_id(app)
    newer = app.dispatcher.handle(push_event(SECOND, "push-2"))
    # The first cap's 3 runs are queued too (released, not started): all coalesce.
    assert newer.runs == [] and {t.outcome for t in newer.tasks} == {Outcome.COALESCED}
    assert next_id(app) == before + 1 and len(app.queue.sent) == 3
    # The coalesce wrote the rows (run, newer digest); the deferred claims, written late, leave
    # them so: a redelivery of the newer push is already triggered, of the first too.
    app.lifecycle.record_backlog("w1")
    assert {row.triggered_digest for row in rows(app).values()} == {SECOND}
    assert {row.pending_run_id for row in rows(app).values()} == set(first.runs)
    assert {t.outcome for t in app.dispatcher.handle(push_event(SECOND, "push-2-again")).tasks} \
        == {Outcome.ALREADY_TRIGGERED}


def test_a_base_rebuild_before_the_claims_are_written_coalesces_into_the_queued_runs(app):
    app.dispatcher.handle(push_event(FIRST, "push-1"))
    assert_unclaimed(app)
    before = next_id(app)
    rebuilt = app.ingest.rebuild(BASE, FIRST)
    assert rebuilt.runs == [] and {t.outcome for t in rebuilt.tasks} == {Outcome.COALESCED}
    assert next_id(app) == before + 1 and len(app.queue.sent) == 3


def test_a_push_whose_rows_show_a_started_run_claims_them_at_once_and_the_late_claim_leaves_them(app):
    first = app.dispatcher.handle(push_event(FIRST, "push-1"))
    assert_unclaimed(app)
    started = app.queue.sent[0]
    run, etag = app.runs.get(started)
    app.runs.save(replace(run, status=RunStatus.RUNNING), etag)  # a worker took it
    newer = app.dispatcher.handle(push_event(SECOND, "push-2"))
    # The task whose run started gets a new run (its claim written at once); the rest coalesce.
    (queued,) = [t for t in newer.tasks if t.outcome == Outcome.QUEUED]
    assert queued.task == run.task and newer.runs == [queued.run_id]
    assert rows(app)[run.task].pending_run_id == queued.run_id
    app.lifecycle.record_backlog("w1")  # the first push's claims, late: not over the newer one
    assert (rows(app)[run.task].pending_run_id, rows(app)[run.task].triggered_digest) == \
        (queued.run_id, SECOND)
    assert len(first.runs) == N


def test_a_wave_builds_every_task_once_while_its_claims_wait(tmp_path, monkeypatch):
    app = FakeApp(tmp_path, REGISTRY, Brakes(max_running=3, wave_max_running=3))
    for n in range(N):
        add_task(app, f"app{n:03d}", ["base"])  # outputs appNNN:latest, pushed when built
    add_task(app, "deep", ["app000", "app001"])
    monkeypatch.setattr(app.lifecycle, "record_in_background", lambda wave_id: None, raising=False)
    decision = app.dispatcher.handle(push_event(FIRST, "push-1"))
    assert len(decision.runs) == N + 1
    assert_unclaimed(app)
    order = play(app)
    assert sorted(order) == sorted([f"app{n:03d}" for n in range(N)] + ["deep"])
    assert len(app.queue.sent) == len(set(app.queue.sent)) == N + 1
    deep_pushes = [d for d in app.decisions.decisions if d.image == ref("app001")]
    assert {t.outcome for d in deep_pushes for t in d.tasks} <= {Outcome.IN_WAVE, Outcome.QUEUED}
    # A redelivery of the base push, still before the claims are written, makes nothing.
    again = app.dispatcher.handle(push_event(FIRST, "push-1-again"))
    assert again.runs == [] and Outcome.QUEUED not in {t.outcome for t in again.tasks}


def test_claims_a_process_dying_before_writing_them_left_are_written_by_housekeeping(app):
    decision = app.dispatcher.handle(push_event(FIRST, "push-1"))
    assert_unclaimed(app)
    assert app.backlog.waves() == ["w1"]
    app.lifecycle.sweep()
    assert app.backlog.waves() == []
    assert {row.pending_run_id for row in rows(app).values()} == set(decision.runs)
    assert {row.triggered_digest for row in rows(app).values()} == {FIRST}
    # With the backlog gone, the rows alone still make a redelivery nothing.
    again = app.dispatcher.handle(push_event(FIRST, "push-1-again"))
    assert again.runs == [] and {t.outcome for t in again.tasks} == {Outcome.ALREADY_TRIGGERED}


def test_a_deferred_claim_stands_over_a_row_a_task_update_or_a_worker_changed_not_a_later_push():
    row = DependencyRow(BASE, "app", True, True, TriggerType.ALL, triggered_digest="sha256:old",
                        pending_run_id="da1", etag="1")
    claim = DeferredClaim(BASE, "app", "da9", FIRST, was_run_id="da1", was_digest="sha256:old")
    assert claim.stands_over(row)
    assert claim.stands_over(DependencyRow(BASE, "app", True, False, TriggerType.ALL,  # a task update
                                           triggered_digest="sha256:old", pending_run_id="da1"))
    row.pending_run_id = None  # the worker of da1 cleared it
    assert claim.stands_over(row)
    assert not claim.stands_over(claim.shown_on(row))  # written already
    row.pending_run_id, row.triggered_digest = "da12", SECOND  # a later push claimed it
    assert not claim.stands_over(row)
    row.pending_run_id, row.triggered_digest = "da9", SECOND  # a later push coalesced into da9
    assert not claim.stands_over(row)


def test_a_backlog_of_the_old_format_reads_as_runs_without_claims(app):
    app.dispatcher.handle(push_event(FIRST, "push-1"))
    app.backlog.backlogs["w1"] = json.dumps(json.loads(app.backlog.backlogs["w1"])["runs"])  # a list
    record = app.backlog.get_record("w1")
    assert len(record.runs) == N - 3 and record.claims == []


def test_pushes_of_other_digests_of_one_base_are_dispatched_one_at_a_time(app, monkeypatch):
    monkeypatch.setattr(dispatch, "BUSY_WAIT_SECONDS", 0.0)
    app.claims.hold_push(f"{REGISTRY}/base")  # another digest's dispatch holds the base
    with pytest.raises(EventBusy):
        app.dispatcher.handle(push_event(SECOND, "push-2"))
    assert not app.runs.all() and not app.backlog.waves()


def test_the_backlogs_are_listed_once_the_base_is_held(app):
    """The hold is what keeps the list of deferred claims whole: the dispatch that held the base
    last put its backlog before letting go, so a listing made after the hold is taken has it (one
    made beside taking the hold could come just before). Taking the hold is slowed here until the
    backlogs are listed, or a moment has passed: a listing beside it would come first."""
    app.dispatcher.handle(push_event(FIRST, "push-1"))
    listed = threading.Event()
    held_when_listed: list[bool] = []
    real_hold, real_list = app.claims.hold_push, app.lifecycle.reads.claims_on

    def slow_hold(push: str) -> str:
        listed.wait(timeout=0.2)  # a wait, not a measure: nothing is timed
        return real_hold(push)

    def listing(base: str) -> list[DeferredClaim]:
        held_when_listed.append(f"{REGISTRY}/base" in app.claims.held)
        listed.set()
        return real_list(base)

    app.claims.hold_push, app.lifecycle.reads.claims_on = slow_hold, listing
    again = app.dispatcher.handle(push_event(FIRST, "push-1-from-another-ingress"))
    assert held_when_listed and all(held_when_listed), held_when_listed
    assert again.runs == [] and {t.outcome for t in again.tasks} == {Outcome.ALREADY_TRIGGERED}


def test_rows_read_beside_the_hold_before_a_smaller_push_claimed_some_are_read_again(app):
    """A big push's first read of its rows goes beside taking the hold; a smaller push that held
    the base just before may have claimed some rows after that read. The big push reads its rows
    again before it defers claims on them, so the task claimed meanwhile gets no second run."""
    stale = app.table.dependents(BASE)
    queued = app.lifecycle.new_run("da900", Trigger.IMAGE_UPDATE, ["app007:x"], task="app007",
                                   cause=f"{BASE}@{SECOND}")
    app.runs.create_many([queued])
    (row,) = [r for r in stale if r.task == "app007"]
    claimed = replace(row, pending_run_id="da900", triggered_digest=SECOND)
    assert app.index.claim([claimed])[0]  # the smaller push's claim, after the big one's read
    reads = []
    real = app.table.dependents

    def first_read_stale(base):
        reads.append(base)
        return [replace(r) for r in stale] if len(reads) == 1 else real(base)

    app.table.dependents = first_read_stale
    decision = app.dispatcher.handle(push_event(FIRST, "push-1"))
    by_task = {t.task: t for t in decision.tasks}
    assert by_task["app007"].outcome == Outcome.COALESCED and by_task["app007"].run_id == "da900"
    assert len(decision.runs) == N - 1
    assert [r.run_id for r in app.lifecycle.reads.newest(task="app007", top=10)[0]] == ["da900"]
