"""The one owner of a run's life, from its record to its end.

`RunLifecycle` records runs, takes their places under the caps (slots), sends their queue messages,
releases the waiting runs of waves, learns how runs ended, fails abandoned runs, requeues lost
messages and reconciles after a crash. The build queue is private to it: dispatch and the scheduler
only decide which runs there are, the worker only builds and reports (`ended`), and housekeeping
and the poison handler call `sweep` and `fail_abandoned`.

A wave's bookkeeping (its plan, members, readiness, counts and breaker) is
`shared.service_layer.waves`'s `WaveCoordinator`, owned by this service (`lifecycle.waves`): it asks
this service for run ids, records, places and releases, and this service tells it how runs ended.

Every step is idempotent, because each may run again (a redelivered message, housekeeping after a
crash): a place is taken once per run, a run is released by an etag-guarded Queued -> released
transition, and a sent message is noted on its run (`Run.unsent_since`), so none is sent twice.

A push answers before all of its wave's runs and members are recorded: the runs released at once
and their members are written first; the others are written as one backlog record (RunBacklog,
one blob per wave, written before the wave's row, which says it has one: `Wave.backlog`) and
recorded from it in the background: runs first, then members and their ready marks, each
insert-or-skip (what was recorded and changed since keeps its change), so redoing it is harmless;
the record goes last. Whatever needs a run or a member from the backlog before that finishes
records the backlog first (a run's end, a release, a join, a cancel, a hold or resume, the recount,
housekeeping's sweep, the wave's members read by the API), and `RunReads` shows the backlog's runs
to readers meanwhile (lists, `task why`, staleness, dispatch's pending check). That check costs no
round trip for a wave without a backlog (its row says so), nor once this process found the backlog
gone (it is never written again).

A push with more than BACKLOG_ABOVE new runs does not write its claims on their index rows before
it answers either: they go in the same record (DeferredClaim) and are written after its runs, each
only where it still stands (DependencyIndex.write_deferred), so that is harmless to redo as well.
Meanwhile `RunReads.claims_on` gives them to dispatch, which shows them on the rows it reads.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from typing import Any

from shared.domain import images
from shared.domain.dependencies import DeferredClaim
from shared.domain.runs import Run, RunNotFound
from shared.domain.vocabulary import WAITING, RunStatus, Trigger, WaveState, utc_now
from shared.domain.waves import Brakes, Member, Wave, WaveNotFound
from shared.service_layer.dependencies import DependencyIndex
from shared.service_layer.ports import (
    BacklogRecord,
    BuilderFactory,
    BuildQueue,
    DecisionLog,
    RunBacklog,
    RunEvents,
    RunRepository,
    Slots,
    Sources,
    WaveRepository,
)
from shared.service_layer.runs import cancel_builder_run, transition
from shared.service_layer.waves import GLOBAL, WaveCoordinator

log = logging.getLogger(__name__)

# A queued run is stored as two rows (the run and its task copy); a transaction holds 100.
RUNS_PER_BATCH = 50
# Batches of one big fan-out recorded and sent at once: writes and sends overlap.
BATCHES_IN_FLIGHT = 4
# Runs noted as sent at once after their messages went out.
NOTES_IN_FLIGHT = 8
# A wave with more waiting runs than this records them from a backlog, after the push answered.
BACKLOG_ABOVE = 2 * RUNS_PER_BATCH
# How long a place may be held by a run not recorded or released yet before reconcile takes it back.
SLOT_SETTLE_TIME = timedelta(seconds=60)

# Housekeeping runs every minute (functions/housekeeping.py). Runs whose worker stopped reporting
# for ABANDONED_AFTER are failed. It sends the message of a run released UNSENT_AFTER ago whose
# send never succeeded (a sender still at it is done or has failed by then), and it has a Running
# run whose heartbeat is RESCUE_AFTER old taken over (a new message) when the queue holds no
# message that could still bring it back (one in flight, visible or not).
ABANDONED_AFTER = timedelta(minutes=10)
UNSENT_AFTER = timedelta(seconds=60)
RESCUE_AFTER = timedelta(seconds=60)
# A run taken over this many times (its builds keep killing their worker) is failed instead.
MAX_ATTEMPTS = 5
# A heartbeat older than this means the run's worker stopped (shared.service_layer.worker beats
# every 10 seconds).
STALE_AFTER = timedelta(seconds=35)


def heartbeat_is_fresh(run: Run) -> bool:
    return run.heartbeat_at is not None and utc_now() - run.heartbeat_at < STALE_AFTER


class RunLifecycle:
    def __init__(self, runs: RunRepository, queue: BuildQueue, slots: Slots, wave_store: WaveRepository,
                 backlog: RunBacklog, index: DependencyIndex, decisions: DecisionLog, sources: Sources,
                 brakes: Brakes, registry_host: str | None, builder: BuilderFactory,
                 events: RunEvents | None = None,
                 on_hold: Callable[[Wave], None] | None = None,
                 on_resume: Callable[[Wave], None] | None = None):
        self.runs = runs
        self._backlog = backlog
        self._index = index  # only to write a big push's deferred claims
        # What readers use: recorded runs, and the backlog's runs not recorded yet.
        self.reads = RunReads(runs, backlog)
        self._queue = queue  # private: every message goes out through this service
        self._slots = slots
        self._sources = sources
        # Only to cancel the build an abandoned run left in the builder (its worker may be gone).
        self._builder = builder
        self.brakes = brakes
        # The registry that image names without a registry host go to.
        self.registry_host = registry_host
        self.waves = WaveCoordinator(wave_store, runs, self, index, decisions, brakes, builder,
                                     events=events, on_hold=on_hold, on_resume=on_resume)
        self._pool = ThreadPoolExecutor(max_workers=BATCHES_IN_FLIGHT, thread_name_prefix="launch")
        # Its own pool: a batch in `_pool` waits for these notes (one shared pool could deadlock).
        self._notes = ThreadPoolExecutor(max_workers=NOTES_IN_FLIGHT, thread_name_prefix="sent")
        # Places of a new wave's first runs, taken side by side.
        self._places = ThreadPoolExecutor(max_workers=8, thread_name_prefix="places")
        # Per thread: the sent notes a `notes_alongside` block waits for (None outside one).
        self._alongside = threading.local()
        # Backlogs recorded after their push answered, one at a time (each uses `_pool`).
        self._background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="backlog")
        # Waves whose backlog this process saw gone (recorded, or never there): a backlog is
        # written before anything else of its wave and only removed, so they need no look again.
        self._without_backlog: set[str] = set()
        # One recording of a wave's backlog at a time in this process (the others wait for it).
        self._recording: dict[str, threading.Lock] = {}
        self._recording_guard = threading.Lock()

    # ---- recording -------------------------------------------------------------------------
    def check_templates(self, templates: list[str]) -> None:
        """ValueError for a template that cannot name an image (before a run id is spent on it)."""
        for template in templates:
            images.render(template, "da0", self.registry_host)

    def allocate(self, count: int) -> list[str]:
        return self.runs.allocate(count)

    def new_run(self, run_id: str, trigger: Trigger, templates: list[str], **fields: Any) -> Run:
        """A Queued run whose outputs are the rendered templates; ValueError if one cannot render."""
        outputs = [images.render(t, run_id, self.registry_host, commit=fields.get("commit"),
                                 branch=fields.get("branch")) for t in templates]
        run = Run(run_id=run_id, status=RunStatus.QUEUED, trigger=trigger, output_images=outputs, **fields)
        run.unsent_since = run.created_at if run.released else None
        return run

    def launch(self, runs: list[Run]) -> None:
        """Record the runs, then queue a message for each released one (a worker must find its run
        recorded; a wave's runs wait for their release)."""
        list(self._pool.map(self._record_and_send, self._batches(runs)))

    def record(self, runs: list[Run]) -> None:
        """Record runs without sending anything (a wave's runs are released afterwards)."""
        list(self._pool.map(self.runs.create_many, self._batches(runs)))

    def defer(self, wave_id: str, runs: list[Run], members: list[Member],
              claims: list[DeferredClaim] | None = None) -> bool:
        """Put these runs of a wave, their members, and the index-row claims its push deferred, in
        its backlog (one write), to be written after the push answers (`record_in_background`;
        housekeeping finishes it if this process stops first). False, and nothing written, for a
        few runs and no claims: the caller records them at once."""
        if len(runs) <= BACKLOG_ABOVE and not claims:
            return False
        self._backlog.put(wave_id, runs, members, claims or [])
        return True

    def record_in_background(self, wave_id: str) -> None:
        self._background.submit(self._record_backlog_quietly, wave_id)

    def record_backlog(self, wave_id: str) -> int:
        """Record the wave's backlog, insert-or-skip: its runs first (a member and a claim name a
        recorded run), then its members and their ready marks, and its push's claims where they
        still stand; the record is dropped last, so a crash anywhere leaves it to be recorded
        again. Returns the runs it held."""
        with self._recording_lock(wave_id):
            record: BacklogRecord = self._backlog.get_record(wave_id)
            if record.runs or record.members or record.claims:
                list(self._pool.map(self.runs.create_absent, self._batches(record.runs)))
                self.waves.waves.create_absent(record.members)
                self._index.write_deferred(record.claims)
                self._backlog.remove(wave_id)
            with self._recording_guard:
                self._without_backlog.add(wave_id)
                self._recording.pop(wave_id, None)
        return len(record.runs)

    def backlog_recorded(self, wave_id: str) -> bool:
        """Before what needs every member of a wave (or found one missing): record its backlog
        if it still has one. True when this call looked (what was missing may be there now);
        False, with no round trip, once this process has seen the wave without a backlog."""
        with self._recording_guard:
            if wave_id in self._without_backlog:
                return False
        self.record_backlog(wave_id)
        return True

    def members_recorded(self, wave: Wave) -> None:
        """`backlog_recorded` for a wave whose row was read: free for a wave that never had one."""
        if wave.backlog:
            self.backlog_recorded(wave.wave_id)

    def _recording_lock(self, wave_id: str) -> threading.Lock:
        with self._recording_guard:
            return self._recording.setdefault(wave_id, threading.Lock())

    def _record_backlog_quietly(self, wave_id: str) -> None:
        try:
            self.record_backlog(wave_id)
        except Exception:  # noqa: BLE001 - housekeeping's sweep records it (the backlog stays)
            log.warning("wave %s: could not record its backlog yet; housekeeping will", wave_id,
                        exc_info=True)

    def change(self, run_id: str, wave_id: str | None, change: Callable[[Run], Run | None]) -> Run:
        """`transition`, for a run that may still be in its wave's backlog (of `wave_id`, or of
        the wave the backlog names when None): the backlog is recorded first."""
        try:
            return transition(self.runs, run_id, change)
        except RunNotFound:
            if wave_id is None:
                wave_id = self.reads.get(run_id)[0].wave_id  # RunNotFound: in no backlog either
            if wave_id is None or not self.record_backlog(wave_id):
                raise
        return transition(self.runs, run_id, change)

    @staticmethod
    def _batches(runs: list[Run]) -> list[list[Run]]:
        return [runs[i : i + RUNS_PER_BATCH] for i in range(0, len(runs), RUNS_PER_BATCH)]

    def _record_and_send(self, batch: list[Run]) -> None:
        self.runs.create_many(batch)
        self.send([run.run_id for run in batch if run.released])

    # ---- sending ---------------------------------------------------------------------------
    def send(self, run_ids: list[str]) -> None:
        """The runs' queue messages, then each run noted as sent (Run.unsent_since cleared). A send
        that fails raises and leaves the runs unsent, for a redelivery or housekeeping to finish.
        Within `notes_alongside`, the notes are written while the caller goes on."""
        if not run_ids:
            return
        self._queue.send(run_ids)
        alongside: list[Future[None]] | None = getattr(self._alongside, "notes", None)
        if alongside is None:
            list(self._notes.map(self._mark_sent, run_ids))
        else:
            alongside.extend(self._notes.submit(self._mark_sent, run_id) for run_id in run_ids)

    @staticmethod
    def left_unsent(run: Run) -> bool:
        """For a delivery of the push that made `run`: was it released without its message being
        sent, by nobody still sending it? A run released with its record was released by that
        push's dispatch, which the delivery waited for (done or failed). A run released later (a
        wave's waiting run, when another ended) is noted unsent until its releaser's send is done:
        only one unsent for UNSENT_AFTER is left (housekeeping sends it as well)."""
        if not run.released or run.unsent_since is None:
            return False
        return run.unsent_since == run.created_at or utc_now() - run.unsent_since > UNSENT_AFTER

    @contextmanager
    def notes_alongside(self) -> Iterator[None]:
        """Sends in this block (on this thread) note their runs as sent side by side with what the
        caller does next (dispatch: recording its decision); the block ends when every note is
        written. Dispatch holds the push until then, so a redelivery of it never finds a run it
        sent still unsent (and sends it again); a note that fails is logged as before."""
        outer: list[Future[None]] | None = getattr(self._alongside, "notes", None)
        notes: list[Future[None]] = []
        self._alongside.notes = notes
        try:
            yield
        finally:
            self._alongside.notes = outer
            for note in notes:
                note.result()  # never raises: _mark_sent logs its failure

    def _mark_sent(self, run_id: str) -> None:
        def sent(run: Run) -> Run | None:
            # A run a worker claimed already (Running) had its message: nothing to write.
            if run.status != RunStatus.QUEUED or run.unsent_since is None:
                return None
            return replace(run, unsent_since=None)

        try:
            transition(self.runs, run_id, sent)
        except Exception:  # noqa: BLE001 - the message is out; only the note is missing
            # Then the run looks unsent: a redelivery or housekeeping may send it once more, and
            # the worker's claim makes that second message a no-op.
            log.warning("run %s: sent, but could not note it", run_id, exc_info=True)

    # ---- places under the caps ---------------------------------------------------------------
    def take_first_places(self, wave_id: str, run_ids: list[str]) -> set[str]:
        """Places for the first runs of a new wave, as many as both caps allow. The takes go side
        by side (a take is a read and an insert-if-absent: concurrent ones never share a place), so
        a push waits for a few round trips, not a few per run."""
        candidates = run_ids[: self.brakes.wave_max_running]
        # A run's global place and its place in the wave are taken side by side too: a run that
        # gets only one gives it back, so neither cap is ever exceeded (a process that dies
        # before giving it back leaves it to reconcile, as a crash after any take does).
        # The runs are new and their wave is not written yet: no one else takes places for them.
        global_taken = [self._places.submit(self._slots.take, GLOBAL, self.brakes.max_running, run_id,
                                            sole=True)
                        for run_id in candidates]
        wave_taken = [self._places.submit(self._slots.take, wave_id, self.brakes.wave_max_running, run_id,
                                          first=place, sole=True)
                      for place, run_id in enumerate(candidates)]
        placed: set[str] = set()
        for run_id, in_global, in_wave in zip(candidates, global_taken, wave_taken, strict=True):
            took_global, took_wave = in_global.result(), in_wave.result()
            if took_global and took_wave:
                placed.add(run_id)
            elif took_global:
                self._slots.give_back(GLOBAL, run_id)
            elif took_wave:
                self._slots.give_back(wave_id, run_id)
        return placed

    def give_back(self, wave_id: str, run_id: str) -> None:
        self._slots.give_back(GLOBAL, run_id)
        self._slots.give_back(wave_id, run_id)

    def _wave_room(self, wave_id: str) -> bool:
        return len(self._slots.holders(wave_id)) < self.brakes.wave_max_running

    # ---- releasing ---------------------------------------------------------------------------
    def release(self, wave_id: str | None = None) -> list[str]:
        """Give ready runs their queue message while the caps allow: the named wave's, or every
        active wave's, oldest wave first. Returns the runs released."""
        store = self.waves.waves
        released: list[str] = []
        if wave_id is not None:
            wave, _ = store.get(wave_id)
            waves = [wave]
        else:
            waves = sorted(store.active(), key=lambda w: w.created_at)
        for wave in waves:
            if wave.state != WaveState.ACTIVE:
                continue
            self.members_recorded(wave)  # its ready marks may be in its backlog still
            for member in store.ready(wave.wave_id, self.brakes.wave_max_running):
                outcome = self._release_one(member)
                if outcome is None:
                    return released  # the service is full
                if outcome:
                    released.append(member.run_id)
                elif not self._wave_room(wave.wave_id):
                    break
        return released

    def _release_one(self, member: Member) -> bool | None:
        """True: released. False: not this one (the wave is full, or the run needs no release).
        None: the service is full."""
        if not self._slots.take(GLOBAL, self.brakes.max_running, member.run_id):
            return None
        if not self._slots.take(member.wave_id, self.brakes.wave_max_running, member.run_id):
            self._slots.give_back(GLOBAL, member.run_id)
            return False

        # Whether this call made the release (the last change applied is the one written): a run
        # another releaser got to first is theirs to send, and its places are the run's, not ours.
        mine = False

        def release(run: Run) -> Run | None:
            nonlocal mine
            mine = run.status == RunStatus.QUEUED and not run.released
            return replace(run, released=True, unsent_since=utc_now()) if mine else None

        try:
            run: Run | None = self.change(member.run_id, member.wave_id, release)
        except RunNotFound:
            run = None
        store = self.waves.waves
        if not mine:
            if run is None or not run.released or run.finished:
                self.give_back(member.wave_id, member.run_id)
            store.unmark_ready(member)
            return False
        self.waves.update_member(member.wave_id, member.task, lambda m: replace(m, released=True))
        store.unmark_ready(member)
        self.send([member.run_id])
        return True

    # ---- ends --------------------------------------------------------------------------------
    def ended(self, run: Run) -> None:
        """A run ended (built, failed, canceled): its quick-build upload goes, and its wave learns
        how it ended (what waited on it may start; housekeeping redoes this after a crash here)."""
        self.remove_quick_upload(run)
        self.waves.run_finished(run)

    def remove_quick_upload(self, run: Run) -> None:
        """A finished quick build's upload is needed no more (a task run's belongs to its task, and
        a run not finished may be delivered again and build from it)."""
        if not run.finished or run.task is not None or run.spec is None or not run.spec.source.upload:
            return
        try:
            self._sources.remove(run.spec.source.upload)  # again on a redelivery: no error
        except Exception:
            log.warning("could not delete the upload of run %s; it stays as an orphan", run.run_id,
                        exc_info=True)

    def fail_abandoned(self, run_id: str, reason: str) -> Run | None:
        """The queue gave up on this run's message (or housekeeping on its silent worker): fail it
        unless a worker is still on it, and cancel the build an attempt left in the builder."""
        failed_here = False

        def fail(run: Run) -> Run | None:
            nonlocal failed_here
            failed_here = False
            if run.finished or (run.status == RunStatus.RUNNING and heartbeat_is_fresh(run)):
                return None
            failed_here = True
            return replace(run, status=RunStatus.FAILED, finished_at=utc_now(), reason=reason)

        try:
            run = transition(self.runs, run_id, fail)
        except RunNotFound:
            return None
        if run.status == RunStatus.FAILED and run.reason == reason:
            if failed_here:  # no worker will stop the ACR run an attempt may have left behind
                run = cancel_builder_run(self.runs, self._builder, run)
            self.ended(run)
            return run
        return None

    # ---- housekeeping ------------------------------------------------------------------------
    def sweep(self) -> list[str]:
        """Housekeeping: fail runs whose worker went silent, take over runs whose worker died, send
        the messages sends that failed left unsent, re-send runs that wait too long, cancel runs
        that no wave will release, reconcile the waves. Returns the runs failed."""
        for wave_id in self._backlog.waves():  # left by a process that stopped before recording it
            self.record_backlog(wave_id)
        now = utc_now()
        failed, silent = [], []
        for run in self.runs.in_status(RunStatus.RUNNING):
            last_sign = run.heartbeat_at or run.started_at or run.created_at
            if now - last_sign > ABANDONED_AFTER or (now - last_sign > RESCUE_AFTER
                                                      and run.attempt >= MAX_ATTEMPTS):
                if self.fail_abandoned(run.run_id, "the worker stopped reporting") is not None:
                    failed.append(run.run_id)
            elif now - last_sign > RESCUE_AFTER:
                silent.append(run.run_id)
        queued = self.runs.in_status(RunStatus.QUEUED)
        # Released, and their send failed (Run.unsent_since): they have no message at all.
        self.send([run.run_id for run in queued
                   if run.released and run.unsent_since and now - run.unsent_since > UNSENT_AFTER])
        if self._queue.is_empty():
            # No message is on its way to a silent Running run: a new one lets a worker take it
            # over (its heartbeat is stale), so the task is still rebuilt.
            self.send(silent)
            # Released Queued runs noted as sent have lost their message only if the queue is empty
            # for this long. (A wave's unreleased runs have no message on purpose.)
            self.send([run.run_id for run in queued if run.released and not run.unsent_since
                       and now - run.created_at > ABANDONED_AFTER])
        self._settle_strays([run for run in queued if not run.released and run.wave_id
                             and now - run.created_at > UNSENT_AFTER])
        self.reconcile()
        return failed

    def _settle_strays(self, waiting: list[Run]) -> None:
        """Waiting runs (not released, in a wave) that no wave will ever release. One whose wave
        was never recorded (a dispatch failed while starting it) is released on its own; one that
        is no member of its recorded wave (a join that crashed before adding it, and whose push was
        not delivered again to adopt it) is canceled."""
        by_wave: dict[str, list[Run]] = {}
        for run in waiting:
            if run.wave_id:
                by_wave.setdefault(run.wave_id, []).append(run)
        store = self.waves.waves
        for wave_id, runs in by_wave.items():
            try:
                wave, _ = store.get(wave_id)
            except WaveNotFound:
                self.send([run.run_id for run in runs if self._release_orphan(run)])
                continue
            # Its members are read only when it has more waiting runs than waiting members, as a
            # stray makes it (a big wave waits for its places with thousands, every minute).
            if len(runs) <= wave.counts.get(WAITING, 0):
                continue
            members = {member.run_id for member in self.waves.members(wave)}
            for run in runs:
                if run.run_id not in members:
                    self.waves.drop(run, f"no member of wave {wave_id}: the join that recorded it "
                                         "stopped short, and it would never be released")

    def _release_orphan(self, run: Run) -> bool:
        """Released by this call (another sweep that got there first sends its message)?"""
        mine = False

        def release(current: Run) -> Run | None:
            nonlocal mine
            mine = current.status == RunStatus.QUEUED and not current.released
            if not mine:
                return None
            return replace(current, released=True, wave_id=None, unsent_since=utc_now(),
                           reason=f"its wave {run.wave_id} was never recorded; released on its own")

        transition(self.runs, run.run_id, release)
        return mine

    def reconcile(self) -> list[str]:
        """After crashes: note runs that ended unnoticed and recount the waves (the wave
        coordinator's catch_up), give back places of runs that hold none legitimately, release
        what can start. Returns the runs released."""
        self.waves.catch_up()
        for scope in [GLOBAL] + [w.wave_id for w in self.waves.waves.active()]:
            for run_id, since in self._slots.taken_at(scope).items():
                # A place taken a moment ago may be on its way to a run being recorded or released
                # (start, _release_one): only one held that long for nothing is reclaimed.
                settled = utc_now() - since > SLOT_SETTLE_TIME
                try:
                    run, _ = self.runs.get(run_id)
                except RunNotFound:
                    if settled:
                        self._slots.give_back(scope, run_id)
                    continue
                if run.finished or (not run.released and settled):
                    self._slots.give_back(scope, run_id)
        return self.release()


class RunReads:
    """Runs as readers see them: the recorded ones, and the runs of waves' backlogs not recorded
    yet (Queued, waiting for their release), so a push's every dependent shows a pending run at
    once. A backlog exists only for the few seconds after a big push: with none, this costs one
    listing more than the run table's read."""

    def __init__(self, runs: RunRepository, backlog: RunBacklog):
        self.runs = runs
        self._backlog = backlog
        # A backlog is written once and only ever removed, so it is read once per process (a
        # dispatch checking N pending runs would otherwise read it N times); a wave whose backlog
        # is gone is forgotten at the next listing.
        self._known: dict[str, BacklogRecord] = {}
        self._known_ids: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def _waves(self) -> list[str]:
        """The waves with a backlog now (one listing), each one's record read once per process."""
        waves = self._backlog.waves()
        with self._lock:
            self._known = {w: record for w, record in self._known.items() if w in waves}
            self._known_ids = {w: ids for w, ids in self._known_ids.items() if w in waves}
            missing = [w for w in waves if w not in self._known]
        for wave_id in missing:
            record = self._backlog.get_record(wave_id)
            with self._lock:
                self._known[wave_id] = record
                self._known_ids[wave_id] = {run.run_id for run in record.runs}
        return waves

    def _records(self) -> list[BacklogRecord]:
        """Every backlog there is now: one listing, and a read of each not read before."""
        waves = self._waves()
        with self._lock:
            return [self._known[wave_id] for wave_id in waves if wave_id in self._known]

    def _planned(self) -> list[Run]:
        return [replace(run) for record in self._records() for run in record.runs]

    def claims_on(self, base: str) -> list[DeferredClaim]:
        """The claims on `base`'s index rows that big pushes deferred and have not written yet
        (some may be written already: DeferredClaim.stands_over tells). With no backlog, the
        listing is the only request."""
        return [claim for record in self._records() for claim in record.claims if claim.base == base]

    def in_backlog(self, run_id: str) -> bool:
        """Is the run planned in a wave's backlog, not recorded yet? Then its member is in that
        backlog too (a backlog's runs and members are deferred together)."""
        waves = self._waves()
        with self._lock:
            return any(run_id in self._known_ids.get(wave_id, ()) for wave_id in waves)

    def get(self, run_id: str) -> tuple[Run, str]:
        """The run and its etag ("" for a run of a backlog); RunNotFound if there is none."""
        try:
            return self.runs.get(run_id)
        except RunNotFound:
            for run in self._planned():
                if run.run_id == run_id:
                    return run, ""
            raise

    def newest(self, *, top: int = 15, task: str | None = None, status: RunStatus | None = None,
               image: str | None = None, after: str | None = None) -> tuple[list[Run], str | None]:
        found, continuation = self.runs.newest(top=top, task=task, status=status, image=image, after=after)
        if image is not None or status not in (None, RunStatus.QUEUED):
            return found, continuation  # a backlog's runs are Queued, listed under no image yet
        counter = self.runs.ids.counter
        planned = [run for run in self._planned() if (task is None or run.task == task)
                   and (after is None or counter(run.run_id) < counter(after))]
        if not planned:
            return found, continuation
        recorded = {run.run_id for run in found}
        merged = found + [run for run in planned if run.run_id not in recorded]
        if continuation is not None:  # runs older than the table's page come on the next page
            merged = [run for run in merged if counter(run.run_id) >= counter(continuation)]
        merged.sort(key=lambda run: counter(run.run_id), reverse=True)
        page = merged[:top]
        return page, page[-1].run_id if len(page) == top else None
