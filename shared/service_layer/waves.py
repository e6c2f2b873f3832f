"""Waves: planning what one base change rebuilds, its members and their readiness, its counts, and
the circuit breaker. See shared.domain.waves for the model.

The wave coordinator belongs to the runs' owner, shared.service_layer.run_life's RunLifecycle
(`lifecycle.waves`): it asks the lifecycle for run ids, records, places under the caps and
releases, and the lifecycle tells it how runs ended.

Every step is idempotent, because each may run again (a redelivered message, housekeeping's
`reconcile` after a crash): readiness is a set of arrived bases, and a member's standing (Waiting,
Queued, its outcome) changes by an etag-guarded write. The wave's counts follow those writes: the
call whose write changed a member's standing moves the counts on the wave row (etag-guarded), so a
run's end reads one member row and one wave row, whatever the wave's size. A crash between the two
writes leaves the counts short; housekeeping's `catch_up` recounts from the members.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING

from shared.domain.decisions import Decision
from shared.domain.dependencies import DeferredClaim, DependencyRow
from shared.domain.events import pushed_content
from shared.domain.rebuild_graph import Plan, plan
from shared.domain.runs import Run, RunNotFound
from shared.domain.vocabulary import WAITING, EventSource, Outcome, RunStatus, Trigger, WaveState, utc_now
from shared.domain.waves import Brakes, Member, Wave, WaveConflict, WaveNotFound
from shared.service_layer.dependencies import DependencyIndex
from shared.service_layer.notifications import NoRunEvents
from shared.service_layer.ports import (
    BuilderFactory,
    DecisionLog,
    RunEvents,
    RunRepository,
    WaveRepository,
)
from shared.service_layer.runs import cancel_builder_run, transition

if TYPE_CHECKING:
    from shared.service_layer.run_life import RunLifecycle

log = logging.getLogger(__name__)

GLOBAL = "global"
BUILT = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.ERROR, RunStatus.TIMEOUT})
FAILED = frozenset({RunStatus.FAILED, RunStatus.ERROR, RunStatus.TIMEOUT})
PENDING = frozenset({WAITING, str(RunStatus.QUEUED)})  # standings of members that have not ended
# Attempts at moving a wave's counts before the move is left to housekeeping's recount.
COUNT_ATTEMPTS = 30


def _standing(member: Member) -> str:
    if member.outcome:
        return str(member.outcome)
    return str(RunStatus.QUEUED) if member.released else WAITING


class WaveCoordinator:
    def __init__(self, waves: WaveRepository, runs: RunRepository, life: RunLifecycle,
                 index: DependencyIndex, decisions: DecisionLog, brakes: Brakes, builder: BuilderFactory,
                 events: RunEvents | None = None,
                 on_hold: Callable[[Wave], None] | None = None,
                 on_resume: Callable[[Wave], None] | None = None):
        self.waves = waves
        # Who hears of runs that end or are held (notifications, Event Grid).
        self.events: RunEvents = events or NoRunEvents()
        # Told when the breaker holds a wave and when a person resumes it (the quarantine of its
        # base digest, set and lifted; shared.service_layer.quarantine). Neither raises.
        self.on_hold = on_hold
        self.on_resume = on_resume
        # Only to cancel the build of a run canceled while it runs (its worker may be gone).
        self.builder = builder
        self.runs = runs
        self.life = life  # the runs' owner: ids, records, places, releases and messages
        self.index = index
        self.decisions = decisions
        self.brakes = brakes
        self._readers = ThreadPoolExecutor(max_workers=8, thread_name_prefix="wave-plan")

    # ---- planning --------------------------------------------------------------------------
    def _dependents(self, refs: Iterable[str]) -> dict[str, list[DependencyRow]]:
        refs = list(refs)
        found = self._readers.map(self.index.dependents, refs)
        return {ref: [row for row in rows if row.verdict().triggers]
                for ref, rows in zip(refs, found, strict=True)}

    def plan(self, first: list[DependencyRow]) -> Plan[DependencyRow]:
        return plan(first, self.life.registry_host, self._dependents)

    def start(self, root: str, event_id: str | None, first: dict[str, Run], rows: list[DependencyRow],
              released: Iterable[str] = (), pushed_at: datetime | None = None,
              received_at: datetime | None = None,
              claims: list[DeferredClaim] | None = None) -> tuple[Wave, list[Run]]:
        """A wave whose first members are the runs in `first` (task -> run, not yet recorded):
        deeper members get runs of their own; the ready ones within the caps are recorded and
        released, the others recorded too, or, in a big wave, after the push answered (from the
        wave's backlog, RunLifecycle.defer). `released` names runs that start at once, outside the
        caps (a manual run). `pushed_at` and `received_at`: the base push's times, kept on the
        wave (its patch latency). `claims`: the index-row claims of the first runs that a big push
        deferred; they go in the wave's backlog with its runs."""
        wave_plan = self._without_tasks_waiting_elsewhere(self.plan(rows), first)
        # Named after its first run (unique: a run belongs to one wave), so no counter is written.
        wave_id = "w" + str(min(self.runs.ids.counter(run.run_id) for run in first.values()))
        deeper = [task for task in wave_plan.members if task not in first]
        runs = dict(first)
        for task, run_id in zip(deeper, self.life.allocate(len(deeper)), strict=True):
            row = wave_plan.members[task].row
            runs[task] = self.life.new_run(run_id, Trigger.IMAGE_UPDATE, row.images, task=task,
                                           cause=f"{root} (wave {wave_id})", platform=row.run_platform)
        at_once = set(released)
        # The first members released now, within the caps: their runs are recorded released and
        # their messages go out with them (no transition, no ready mark for them).
        first_ready = sorted(
            (t for t, p in wave_plan.members.items() if not p.waits_for and runs[t].run_id not in at_once),
            key=lambda t: (wave_plan.members[t].level, self.runs.ids.counter(runs[t].run_id)))
        at_once |= self.life.take_first_places(wave_id, [runs[t].run_id for t in first_ready])
        members = []
        for task, planned in wave_plan.members.items():
            run = runs[task]
            run.wave_id, run.released = wave_id, run.run_id in at_once
            run.unsent_since = run.created_at if run.released else None
            members.append(Member(wave_id, task, run.run_id, planned.level, sorted(planned.waits_for),
                                  sorted(planned.needed_by), released=run.released))
        counts = Counter(_standing(m) for m in members)
        wave = Wave(wave_id, root, event_id, levels=wave_plan.levels, counts=dict(counts),
                    pushed_at=pushed_at, received_at=received_at)
        if wave_plan.cycles:
            wave.reason = "cycle left out: " + ", ".join(f"{a} -> {b}" for a, b in wave_plan.cycles)
        # In a big wave, the runs that wait and their members (with their ready marks) go to the
        # wave's backlog, one write before its rows, and are written after the push answers, with
        # the push's deferred claims: every member names a run recorded or in the backlog, and the
        # wave row says there is one, so whoever needs its members records it first
        # (RunLifecycle.members_recorded). The wave's rows and the released runs go to different
        # tables: written side by side. The released members are written before any of their runs
        # can finish (a worker must find its member).
        wave.backlog = self.life.defer(wave_id, [run for run in runs.values() if run.run_id not in at_once],
                                       [member for member in members if member.run_id not in at_once],
                                       claims)
        writing = self._readers.submit(
            self.waves.create, wave,
            [member for member in members if member.run_id in at_once] if wave.backlog else members)
        self.life.record([run for run in runs.values() if run.run_id in at_once or not wave.backlog])
        writing.result()
        self.life.send([run.run_id for run in runs.values() if run.run_id in at_once])
        if wave.backlog:
            self.life.record_in_background(wave_id)
        return wave, list(runs.values())

    def _without_tasks_waiting_elsewhere(self, wave_plan: Plan[DependencyRow],
                                         first: dict[str, Run]) -> Plan[DependencyRow]:
        """The plan without the deeper tasks that have a run waiting in another wave, nor what
        they lead to here (first members stay: their runs are claimed). Such a run has not started:
        it builds on this wave's change as well, so the task coalesces into it. Should it start
        before its base here is built, that base's push joins the task to this wave then
        (dispatch's `_in_wave`), so nothing is built on an old base."""
        waiting = self.waiting_elsewhere([t for t in wave_plan.members if t not in first])
        if not waiting:
            return wave_plan
        left_out: set[str] = set()
        todo = list(waiting)
        while todo:
            task = todo.pop()
            if task in left_out or task in first:
                continue
            left_out.add(task)
            todo.extend(wave_plan.members[task].needed_by)
        members = {task: replace(planned, waits_for=planned.waits_for - left_out,
                                 needed_by=planned.needed_by - left_out)
                   for task, planned in wave_plan.members.items() if task not in left_out}
        return replace(wave_plan, members=members)

    def waiting_elsewhere(self, tasks: list[str], but: str | None = None) -> dict[str, Run]:
        """The tasks that have a run not started yet in an active wave (other than `but`), as a
        member of it (a run a crash left outside its wave never builds): task -> that run."""
        if not tasks:
            return {}  # a wave of first members only (one push's direct dependents): no read
        others = {w.wave_id for w in self.waves.active() if w.wave_id != but}
        if not others:
            return {}  # the common case: one read, whatever the wave's size

        def waiting(task: str) -> Run | None:
            queued, _ = self.life.reads.newest(task=task, status=RunStatus.QUEUED, top=1)
            run = queued[0] if queued else None
            if run is None or run.wave_id not in others:
                return None
            member = self.waves.member(run.wave_id, task)
            if member is None:
                # Planned in its wave's backlog (that run's member is there too): it waits, and
                # this push need not record another wave's backlog to know it.
                return run if self.life.reads.in_backlog(run.run_id) else None
            return run if member.run_id == run.run_id else None

        found = self._readers.map(waiting, tasks)
        return {task: run for task, run in zip(tasks, found, strict=True) if run is not None}

    def recorded(self, wave_id: str) -> bool:
        """Is the wave's row there? (A dispatch that failed while starting a wave leaves runs that
        name a wave never recorded.)"""
        try:
            self.waves.get(wave_id)
        except WaveNotFound:
            return False
        return True

    def member(self, wave_id: str, task: str) -> Member | None:
        """A member, or None if the task is none: where it is not stored, the wave's backlog is
        recorded first if it may still hold it (once per wave and process: a miss costs nothing
        more once the backlog is known gone)."""
        found = self.waves.member(wave_id, task)
        if found is None and self.life.backlog_recorded(wave_id):
            found = self.waves.member(wave_id, task)
        return found

    def members(self, wave: Wave) -> list[Member]:
        """Every member of the wave, its backlog recorded first if it may still have one."""
        self.life.members_recorded(wave)
        return self.waves.members(wave.wave_id)

    def wave_of(self, content: str) -> Wave | None:
        """The active wave a push of `content` (`registry/repository@digest`) started, under any
        of its tags (the oldest, should there be several); None if there is none."""
        found = [w for w in self.waves.active() if pushed_content(w.root) == content]
        return min(found, key=lambda w: w.created_at) if found else None

    def join(self, wave_id: str, producer: Member | None, row: DependencyRow, cause: str,
             planned: Run | None = None) -> Run | None:
        """A task the plan did not foresee, built FROM a member's push (or FROM another tag of the
        wave's own push): it joins, ready at once (the image it is built FROM has been pushed).
        `planned`: its run, claimed on its index row already and not yet recorded (else a run is
        allocated here). None if it is a member already, or the wave was canceled."""
        wave, _ = self.waves.get(wave_id)
        if wave.state == WaveState.CANCELED:
            return None
        self.life.members_recorded(wave)  # a task planned in its backlog is a member already
        run = None if planned else self._stray(wave_id, row.task)
        if run is None:
            if planned is None:
                (run_id,) = self.life.allocate(1)
                planned = self.life.new_run(run_id, Trigger.IMAGE_UPDATE, row.images, task=row.task,
                                            cause=cause, platform=row.run_platform)
            run = planned
            run.wave_id, run.released, run.unsent_since = wave_id, False, None
            # The run before its member: a member always names a recorded run. A crash in between
            # leaves a Queued run outside the wave: the push's redelivery adopts it (`_stray`), and
            # housekeeping cancels it if none comes (RunLifecycle.sweep).
            self.life.record([run])
        member = Member(wave_id, row.task, run.run_id, (producer.level + 1) if producer else 1)
        if not self.waves.add_member(member):
            joined = self.member(wave_id, row.task)
            if joined is None or joined.run_id != run.run_id:  # not a concurrent adoption of it
                self.drop(run, f"{row.task} is a member of wave {wave_id} already")
            return None
        self.waves.mark_ready(member)
        # Counted by the call that added it; a wave settled Done meanwhile is active again until
        # the newcomer ends.
        self._count(wave_id, {_standing(member): 1})
        self.life.release(wave_id)
        return run

    def _stray(self, wave_id: str, task: str) -> Run | None:
        """The run a join of `task` recorded for this wave before it crashed short of adding the
        member (`join` is asked only for a task that is no member)."""
        queued, _ = self.runs.newest(task=task, status=RunStatus.QUEUED, top=1)
        run = queued[0] if queued else None
        return run if run is not None and run.wave_id == wave_id and not run.released else None

    def drop(self, run: Run, reason: str) -> None:
        """A recorded run that is not a member of its wave after all: canceled, never built."""
        def cancel(current: Run) -> Run | None:
            if current.status != RunStatus.QUEUED or current.released:
                return None
            return replace(current, status=RunStatus.CANCELED, finished_at=utc_now(), reason=reason)

        transition(self.runs, run.run_id, cancel)

    def update_member(self, wave_id: str, task: str,
                      change: Callable[[Member], Member | None]) -> Member | None:
        """Apply `change` to a member (etag-guarded, retried); the call whose write changed the
        member's standing moves the wave's counts."""
        for _ in range(10):
            member = self.member(wave_id, task)
            if member is None:
                return None
            updated = change(member)
            if updated is None or updated == member:
                return member
            updated.etag = member.etag
            if self.waves.save_member(updated):
                before, after = _standing(member), _standing(updated)
                if before != after:
                    self._count(wave_id, {before: -1, after: 1})
                return updated
        raise WaveConflict(f"member {task} of wave {wave_id} kept changing")

    # ---- finishing -------------------------------------------------------------------------
    def run_finished(self, run: Run) -> None:
        """A wave's run ended (any way): note it, make what waited on it ready (or cancel it, if the
        run did not succeed), give its places back, check the breaker, release what now can start."""
        self.events.run_changed(run)  # its task's endpoint hears of the end (never raises or waits)
        if run.wave_id is None or run.task is None or not run.finished:
            return
        wave_id = run.wave_id
        status = run.status
        member = self.member(wave_id, run.task)
        if member is None:
            self.life.give_back(wave_id, run.run_id)
            return
        # What follows from the run's end first, its outcome last: every step is idempotent, and
        # until the outcome is written housekeeping's reconcile sees a released member whose run
        # ended and does all of it again (a crash in between strands nothing).
        if run.status == RunStatus.SUCCEEDED:
            built = run.task
            for task in member.needed_by:
                arrived = self.update_member(wave_id, task, lambda m: m if built in m.arrived
                                             else replace(m, arrived=[*m.arrived, built]))
                if arrived is not None and arrived.ready and not arrived.released and arrived.outcome is None:
                    self.waves.mark_ready(arrived)
        else:
            self._cancel_dependents(wave_id, member, f"{run.task} ({run.run_id}) ended {run.status}")
        self.update_member(wave_id, run.task,
                           lambda m: m if m.outcome else replace(m, outcome=status, released=True))
        self.life.give_back(wave_id, run.run_id)
        self.life.release()

    def _cancel_dependents(self, wave_id: str, member: Member, why: str) -> None:
        todo = list(member.needed_by)
        seen: set[str] = set()
        while todo:
            task = todo.pop()
            if task in seen:
                continue
            seen.add(task)
            dependent = self.member(wave_id, task)
            if dependent is None:
                continue
            self._cancel_run(dependent, f"not built: its base {why} in wave {wave_id}")
            todo.extend(dependent.needed_by)

    def _cancel_run(self, member: Member, reason: str, status: RunStatus = RunStatus.CANCELED) -> None:
        was_building = stopped_here = False

        def cancel(run: Run) -> Run | None:
            nonlocal was_building, stopped_here
            was_building = run.status == RunStatus.RUNNING
            stopped_here = False
            if run.finished or (run.status == RunStatus.RUNNING and status == RunStatus.HELD):
                return None
            if run.status == RunStatus.RUNNING:
                stopped_here = True
                return replace(run, status=RunStatus.CANCELED, finished_at=utc_now(), reason=reason)
            if status == RunStatus.HELD:
                if run.released:
                    return None  # it has its message: it builds
                return replace(run, status=RunStatus.HELD, reason=reason)
            return replace(run, status=status, finished_at=utc_now(), reason=reason)

        try:
            run = self.life.change(member.run_id, member.wave_id, cancel)
        except RunNotFound:
            return
        if stopped_here:  # once, by the call that canceled it (a redo finds it finished)
            run = cancel_builder_run(self.runs, self.builder, run)
        if run.status == RunStatus.HELD:
            self.events.run_changed(run)  # held by the breaker: its task's endpoint hears of it
        self.waves.unmark_ready(member)
        if run.finished:
            self.update_member(member.wave_id, member.task,
                               lambda m: m if m.outcome else replace(m, outcome=run.status))
            # A build that is still going keeps its places until its worker sees the cancel and
            # stops (run_finished gives them back then): the caps count what really runs.
            if not was_building:
                self.life.give_back(member.wave_id, member.run_id)

    def _count(self, wave_id: str, moves: Mapping[str, int]) -> None:
        """Move the wave's counts by `moves` (standing -> change), then check the breaker and
        whether the wave is Done: one etag-guarded write of the wave row, by the call whose member
        write made the move. Left to housekeeping's recount (catch_up) if the row keeps changing."""
        for _ in range(COUNT_ATTEMPTS):
            wave, etag = self.waves.get(wave_id)
            counts = Counter(wave.counts)
            counts.update(moves)
            if self._settle(wave, etag, {k: n for k, n in counts.items() if n > 0}):
                return
        log.warning("wave %s: its counts kept changing; housekeeping recounts them", wave_id)

    def _recount(self, wave_id: str, members: list[Member] | None = None, read_at: str = "") -> None:
        """Counts from every member (housekeeping, after a crash between a member's write and its
        count); the breaker; Done when every member has ended. `members`: as read just after the
        wave's version `read_at` (a big wave's members are read once per pass, not twice), used
        only if the wave is still at that version (no count moved since)."""
        for _ in range(10):
            wave, etag = self.waves.get(wave_id)
            if members is None or etag != read_at:
                members = self.members(wave)  # never a count from part of the members
            if self._settle(wave, etag, dict(Counter(_standing(m) for m in members)), members):
                return
            members = None
        raise WaveConflict(f"wave {wave_id} kept changing")

    def _settle(self, wave: Wave, etag: str, counts: dict[str, int],
                members: list[Member] | None = None) -> bool:
        """Write the wave with these counts, Held if the breaker trips, Done if no member is
        pending. False: the wave changed since `etag` was read (read it again)."""
        built = sum(n for standing, n in counts.items() if standing in BUILT)
        failed = sum(n for standing, n in counts.items() if standing in FAILED)
        updated = replace(wave, counts=counts)
        held_now = False
        if wave.state == WaveState.ACTIVE and self.brakes.trips(built - wave.breaker_base[0],
                                                                failed - wave.breaker_base[1]):
            updated.state = WaveState.HELD
            updated.reason = (f"circuit breaker: {failed} of the {built} builds that finished failed; "
                              "`basetrigger wave resume` or `wave cancel` decides")
            held_now = True
        pending = any(standing in PENDING for standing in counts)
        if not pending and wave.state in (WaveState.ACTIVE, WaveState.HELD):
            updated.state = WaveState.DONE
        elif pending and wave.state == WaveState.DONE:
            updated.state = WaveState.ACTIVE  # a member joined a wave settled Done meanwhile
        if updated == wave:
            return True
        # Read before the wave says Held (the breaker trips once a wave): its runs are held a
        # moment after it, not a read later.
        members = (members if members is not None else self.members(wave)) if held_now else []
        try:
            self.waves.save(updated, etag)
        except WaveConflict:
            return False
        if held_now:
            self._hold(updated, members)
        return True

    def _hold(self, wave: Wave, members: list[Member]) -> None:
        # The decision first: whoever sees the wave Held finds why (the runs follow in a moment).
        self.decisions.record(Decision(f"{wave.wave_id}:held:{utc_now().isoformat()}", EventSource.WAVE,
                                       Outcome.HELD, f"wave {wave.wave_id} held: {wave.reason}"),
                              mark_seen=False)
        if self.on_hold is not None:
            self.on_hold(wave)
        for member in members:
            if member.outcome is None and not member.released:
                self._cancel_run(member, wave.reason or "held", RunStatus.HELD)
        log.warning("wave %s held: %s", wave.wave_id, wave.reason)

    # ---- operator commands -----------------------------------------------------------------
    def resume(self, wave_id: str) -> Wave:
        wave, etag = self.waves.get(wave_id)
        if wave.state != WaveState.HELD:
            raise WaveConflict(f"wave {wave_id} is {wave.state}, not Held")
        members = self.members(wave)
        built = sum(1 for m in members if m.outcome in BUILT)
        failed = sum(1 for m in members if m.outcome in FAILED)
        def unhold(run: Run) -> Run | None:
            if run.status != RunStatus.HELD:
                return None
            return replace(run, status=RunStatus.QUEUED, reason=None)

        # The runs first, the wave's state last: a resume that fails part-way leaves the wave Held,
        # and resuming again finishes it (each step is idempotent).
        for member in members:
            if member.outcome is None and not member.released:
                self.life.change(member.run_id, wave_id, unhold)
                if member.ready:
                    self.waves.mark_ready(member)
        self.waves.save(replace(wave, state=WaveState.ACTIVE, reason=f"resumed after: {wave.reason}",
                                breaker_base=(built, failed)), etag)
        if self.on_resume is not None:
            self.on_resume(wave)
        self.life.release(wave_id)
        return self.waves.get(wave_id)[0]

    def cancel(self, wave_id: str) -> Wave:
        wave, _ = self.waves.get(wave_id)
        if wave.state in (WaveState.CANCELED, WaveState.DONE):
            raise WaveConflict(f"wave {wave_id} is already {wave.state}")
        # The runs first, the wave's state last: a cancel that fails part-way leaves the wave as it
        # was, and canceling again finishes it (a canceled run stays canceled).
        for member in self.members(wave):
            if member.outcome is None:
                self._cancel_run(member, f"wave {wave_id} canceled by request")
        for _ in range(COUNT_ATTEMPTS):  # its counts move while builds that were going stop
            current, etag = self.waves.get(wave_id)
            try:
                self.waves.save(replace(current, state=WaveState.CANCELED, reason="canceled by request"),
                                etag)
                break
            except WaveConflict:
                continue
        else:
            raise WaveConflict(f"wave {wave_id} kept changing")
        self.life.release()
        return self.waves.get(wave_id)[0]

    # ---- housekeeping ----------------------------------------------------------------------
    def catch_up(self) -> None:
        """After crashes: note runs of active (and recently held) waves that ended unnoticed, and
        recount each wave from its members (RunLifecycle.reconcile calls it first)."""
        recent_held = [w for w in self.waves.newest(top=50)[0] if w.state == WaveState.HELD]
        for wave in self.waves.active() + recent_held:
            self.life.members_recorded(wave)  # never a count from part of the members
            _, read_at = self.waves.get(wave.wave_id)  # the version first, then what it counts
            members: list[Member] | None = self.waves.members(wave.wave_id)
            for member in members or []:
                if member.outcome is None and member.released:
                    try:
                        run, _ = self.runs.get(member.run_id)
                    except RunNotFound:
                        continue
                    if run.finished:
                        self.run_finished(run)
                        members = None  # changed since they were read: the recount reads them again
            self._recount(wave.wave_id, members, read_at)
