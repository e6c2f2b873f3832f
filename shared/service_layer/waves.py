"""Waves: planning what one base change rebuilds, releasing it in order within the caps, and the
circuit breaker. See shared.domain.waves for the model.

Every step is idempotent, because each may run again (a redelivered message, housekeeping's
`reconcile` after a crash): readiness is a set of arrived bases, places are slots taken once per
run, and a run is released by an etag-guarded Queued -> released transition.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timedelta

from shared.domain.decisions import Decision
from shared.domain.dependencies import DependencyRow
from shared.domain.rebuild_graph import Plan, plan
from shared.domain.runs import Run, RunNotFound
from shared.domain.vocabulary import EventSource, Outcome, RunStatus, Trigger, WaveState, utc_now
from shared.domain.waves import Brakes, Member, Wave, WaveConflict, WaveNotFound
from shared.service_layer.dependencies import DependencyIndex
from shared.service_layer.notifications import NoRunEvents
from shared.service_layer.ports import (
    BuilderFactory,
    DecisionLog,
    RunEvents,
    RunRepository,
    Slots,
    WaveRepository,
)
from shared.service_layer.runs import RunLauncher, cancel_builder_run, transition

log = logging.getLogger(__name__)

GLOBAL = "global"
WAITING = "Waiting"  # the count of members whose runs are not released yet
BUILT = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.ERROR, RunStatus.TIMEOUT})
FAILED = frozenset({RunStatus.FAILED, RunStatus.ERROR, RunStatus.TIMEOUT})
# How long a place may be held by a run not recorded or released yet before reconcile takes it back.
SLOT_SETTLE_TIME = timedelta(seconds=60)


def _standing(member: Member) -> str:
    if member.outcome:
        return str(member.outcome)
    return str(RunStatus.QUEUED) if member.released else WAITING


class WaveCoordinator:
    def __init__(self, waves: WaveRepository, slots: Slots, runs: RunRepository, launcher: RunLauncher,
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
        self.slots = slots
        self.runs = runs
        self.launcher = launcher
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
        return plan(first, self.launcher.registry_host, self._dependents)

    def start(self, root: str, event_id: str | None, first: dict[str, Run], rows: list[DependencyRow],
              released: Iterable[str] = (), pushed_at: datetime | None = None,
              received_at: datetime | None = None) -> tuple[Wave, list[Run]]:
        """A wave whose first members are the runs in `first` (task -> run, not yet recorded):
        deeper members get runs of their own; all are recorded, then the ready ones released.
        `released` names runs that start at once, outside the caps (a manual run). `pushed_at` and
        `received_at`: the base push's times, kept on the wave (its patch latency)."""
        wave_plan = self.plan(rows)
        # Named after its first run (unique: a run belongs to one wave), so no counter is written.
        wave_id = "w" + str(min(self.runs.ids.counter(run.run_id) for run in first.values()))
        deeper = [task for task in wave_plan.members if task not in first]
        runs = dict(first)
        for task, run_id in zip(deeper, self.launcher.allocate(len(deeper)), strict=True):
            row = wave_plan.members[task].row
            runs[task] = self.launcher.new_run(run_id, Trigger.IMAGE_UPDATE, row.images, task=task,
                                               cause=f"{root} (wave {wave_id})")
        at_once = set(released)
        # The first members released now, within the caps: their runs are recorded released and
        # their messages go out with them (no transition, no ready mark for them).
        first_ready = sorted(
            (t for t, p in wave_plan.members.items() if not p.waits_for and runs[t].run_id not in at_once),
            key=lambda t: (wave_plan.members[t].level, self.runs.ids.counter(runs[t].run_id)))
        at_once |= self._take_slots(wave_id, [runs[t].run_id for t in first_ready])
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
        # The wave's rows and the runs go to different tables: written side by side. The wave is
        # complete before any released run can finish (a worker must find its member to report to).
        writing = self._readers.submit(self.waves.create, wave, members)
        self.launcher.record(list(runs.values()))
        writing.result()
        self.launcher.send([run.run_id for run in runs.values() if run.run_id in at_once])
        return wave, list(runs.values())

    def _take_slots(self, wave_id: str, run_ids: list[str]) -> set[str]:
        """Places for the first runs of a new wave, as many as both caps allow."""
        taken: set[str] = set()
        for place, run_id in enumerate(run_ids[: self.brakes.wave_max_running]):
            if not self.slots.take(GLOBAL, self.brakes.max_running, run_id):
                break
            if not self.slots.take(wave_id, self.brakes.wave_max_running, run_id, first=place):
                self.slots.give_back(GLOBAL, run_id)
                break
            taken.add(run_id)
        return taken

    def recorded(self, wave_id: str) -> bool:
        """Is the wave's row there? (A dispatch that failed while starting a wave leaves runs that
        name a wave never recorded.)"""
        try:
            self.waves.get(wave_id)
        except WaveNotFound:
            return False
        return True

    def join(self, wave_id: str, producer: Member | None, row: DependencyRow, cause: str) -> Run | None:
        """A task the plan did not foresee, built FROM a member's push: it joins, ready at once (the
        image it is built FROM has just been pushed). None if it is a member already."""
        wave, _ = self.waves.get(wave_id)
        if wave.state == WaveState.CANCELED:
            return None
        (run_id,) = self.launcher.allocate(1)
        run = self.launcher.new_run(run_id, Trigger.IMAGE_UPDATE, row.images, task=row.task, cause=cause)
        run.wave_id, run.released, run.unsent_since = wave_id, False, None
        member = Member(wave_id, row.task, run_id, (producer.level + 1) if producer else 1)
        # The run before its member: a member always names a recorded run. A crash in between
        # leaves a Queued run that is no member and never builds; the push's redelivery joins the
        # task again with a run of its own.
        self.launcher.launch([run])
        if not self.waves.add_member(member):
            self._drop(run, f"{row.task} is a member of wave {wave_id} already")
            return None
        self.waves.mark_ready(member)
        self._reopen(wave_id)
        self.release(wave_id)
        return run

    def _drop(self, run: Run, reason: str) -> None:
        """A recorded run that is not a member of its wave after all: canceled, never built."""
        def cancel(current: Run) -> Run | None:
            if current.status != RunStatus.QUEUED or current.released:
                return None
            return replace(current, status=RunStatus.CANCELED, finished_at=utc_now(), reason=reason)

        transition(self.runs, run.run_id, cancel)

    def _reopen(self, wave_id: str) -> None:
        """A member joined a wave that was finishing: if it was settled Done meanwhile (every member
        it knew had ended), it is active again until the newcomer ends."""
        for _ in range(10):
            wave, etag = self.waves.get(wave_id)
            if wave.state != WaveState.DONE:
                return
            try:
                self.waves.save(replace(wave, state=WaveState.ACTIVE), etag)
                return
            except WaveConflict:
                continue

    # ---- releasing -------------------------------------------------------------------------
    def release(self, wave_id: str | None = None) -> list[str]:
        """Give ready runs their queue message while the caps allow: the named wave's, or every
        active wave's, oldest wave first. Returns the runs released."""
        released: list[str] = []
        if wave_id is not None:
            wave, _ = self.waves.get(wave_id)
            waves = [wave]
        else:
            waves = sorted(self.waves.active(), key=lambda w: w.created_at)
        for wave in waves:
            if wave.state != WaveState.ACTIVE:
                continue
            for member in self.waves.ready(wave.wave_id, self.brakes.wave_max_running):
                outcome = self._release_one(member)
                if outcome is None:
                    return released  # the service is full
                if outcome:
                    released.append(member.run_id)
                elif outcome is False and not self._wave_room(wave.wave_id):
                    break
        return released

    def _wave_room(self, wave_id: str) -> bool:
        return len(self.slots.holders(wave_id)) < self.brakes.wave_max_running

    def _release_one(self, member: Member) -> bool | None:
        """True: released. False: not this one (the wave is full, or the run needs no release).
        None: the service is full."""
        if not self.slots.take(GLOBAL, self.brakes.max_running, member.run_id):
            return None
        if not self.slots.take(member.wave_id, self.brakes.wave_max_running, member.run_id):
            self.slots.give_back(GLOBAL, member.run_id)
            return False

        # Whether this call made the release (the last change applied is the one written): a run
        # another releaser got to first is theirs to send, and its places are the run's, not ours.
        mine = False

        def release(run: Run) -> Run | None:
            nonlocal mine
            mine = run.status == RunStatus.QUEUED and not run.released
            return replace(run, released=True, unsent_since=utc_now()) if mine else None

        try:
            run: Run | None = transition(self.runs, member.run_id, release)
        except RunNotFound:
            run = None
        if not mine:
            if run is None or not run.released or run.finished:
                self._give_back(member.wave_id, member.run_id)
            self.waves.unmark_ready(member)
            return False
        self._update_member(member.wave_id, member.task, lambda m: replace(m, released=True))
        self.waves.unmark_ready(member)
        self.launcher.send([member.run_id])
        return True

    def _give_back(self, wave_id: str, run_id: str) -> None:
        self.slots.give_back(GLOBAL, run_id)
        self.slots.give_back(wave_id, run_id)

    def _update_member(self, wave_id: str, task: str,
                       change: Callable[[Member], Member | None]) -> Member | None:
        for _ in range(10):
            member = self.waves.member(wave_id, task)
            if member is None:
                return None
            updated = change(member)
            if updated is None or updated == member:
                return member
            updated.etag = member.etag
            if self.waves.save_member(updated):
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
        member = self.waves.member(wave_id, run.task)
        if member is None:
            self._give_back(wave_id, run.run_id)
            return
        # What follows from the run's end first, its outcome last: every step is idempotent, and
        # until the outcome is written housekeeping's reconcile sees a released member whose run
        # ended and does all of it again (a crash in between strands nothing).
        if run.status == RunStatus.SUCCEEDED:
            built = run.task
            for task in member.needed_by:
                arrived = self._update_member(wave_id, task, lambda m: m if built in m.arrived
                                              else replace(m, arrived=[*m.arrived, built]))
                if arrived is not None and arrived.ready and not arrived.released and arrived.outcome is None:
                    self.waves.mark_ready(arrived)
        else:
            self._cancel_dependents(wave_id, member, f"{run.task} ({run.run_id}) ended {run.status}")
        self._update_member(wave_id, run.task,
                            lambda m: m if m.outcome else replace(m, outcome=status, released=True))
        self._give_back(wave_id, run.run_id)
        self._settle(wave_id)
        self.release()

    def _cancel_dependents(self, wave_id: str, member: Member, why: str) -> None:
        todo = list(member.needed_by)
        seen: set[str] = set()
        while todo:
            task = todo.pop()
            if task in seen:
                continue
            seen.add(task)
            dependent = self.waves.member(wave_id, task)
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
            run = transition(self.runs, member.run_id, cancel)
        except RunNotFound:
            return
        if stopped_here:  # once, by the call that canceled it (a redo finds it finished)
            run = cancel_builder_run(self.runs, self.builder, run)
        if run.status == RunStatus.HELD:
            self.events.run_changed(run)  # held by the breaker: its task's endpoint hears of it
        self.waves.unmark_ready(member)
        if run.finished:
            self._update_member(member.wave_id, member.task,
                                lambda m: m if m.outcome else replace(m, outcome=run.status))
            # A build that is still going keeps its places until its worker sees the cancel and
            # stops (run_finished gives them back then): the caps count what really runs.
            if not was_building:
                self._give_back(member.wave_id, member.run_id)

    def _settle(self, wave_id: str) -> Wave:
        """Counts from the members; the breaker; Done when every member has ended."""
        for _ in range(10):
            wave, etag = self.waves.get(wave_id)
            members = self.waves.members(wave_id)
            counts = Counter(_standing(m) for m in members)
            built = sum(1 for m in members if m.outcome in BUILT)
            failed = sum(1 for m in members if m.outcome in FAILED)
            updated = replace(wave, counts=dict(counts))
            held_now = False
            if wave.state == WaveState.ACTIVE and self.brakes.trips(built - wave.breaker_base[0],
                                                                    failed - wave.breaker_base[1]):
                updated.state = WaveState.HELD
                updated.reason = (f"circuit breaker: {failed} of the {built} builds that finished failed; "
                                  "`basetrigger wave resume` or `wave cancel` decides")
                held_now = True
            if all(m.outcome for m in members) and wave.state in (WaveState.ACTIVE, WaveState.HELD):
                updated.state = WaveState.DONE
            if updated == wave:
                return wave
            try:
                self.waves.save(updated, etag)
            except WaveConflict:
                continue
            if held_now:
                self._hold(updated, members)
            return updated
        raise WaveConflict(f"wave {wave_id} kept changing")

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
        members = self.waves.members(wave_id)
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
                transition(self.runs, member.run_id, unhold)
                if member.ready:
                    self.waves.mark_ready(member)
        self.waves.save(replace(wave, state=WaveState.ACTIVE, reason=f"resumed after: {wave.reason}",
                                breaker_base=(built, failed)), etag)
        if self.on_resume is not None:
            self.on_resume(wave)
        self.release(wave_id)
        return self.waves.get(wave_id)[0]

    def cancel(self, wave_id: str) -> Wave:
        wave, _ = self.waves.get(wave_id)
        if wave.state in (WaveState.CANCELED, WaveState.DONE):
            raise WaveConflict(f"wave {wave_id} is already {wave.state}")
        # The runs first, the wave's state last: a cancel that fails part-way leaves the wave as it
        # was, and canceling again finishes it (a canceled run stays canceled).
        for member in self.waves.members(wave_id):
            if member.outcome is None:
                self._cancel_run(member, f"wave {wave_id} canceled by request")
        current, etag = self.waves.get(wave_id)  # its counts moved as its runs were canceled
        self.waves.save(replace(current, state=WaveState.CANCELED, reason="canceled by request"), etag)
        self._settle(wave_id)
        self.release()
        return self.waves.get(wave_id)[0]

    # ---- housekeeping ----------------------------------------------------------------------
    def reconcile(self) -> list[str]:
        """After crashes: note runs that ended unnoticed, give back places of runs that hold none
        legitimately, release what can start. Returns the runs released."""
        recent_held = [w for w in self.waves.newest(top=50)[0] if w.state == WaveState.HELD]
        for wave in self.waves.active() + recent_held:
            for member in self.waves.members(wave.wave_id):
                if member.outcome is None and member.released:
                    try:
                        run, _ = self.runs.get(member.run_id)
                    except RunNotFound:
                        continue
                    if run.finished:
                        self.run_finished(run)
            self._settle(wave.wave_id)
        for scope in [GLOBAL] + [w.wave_id for w in self.waves.active()]:
            for run_id, since in self.slots.taken_at(scope).items():
                # A place taken a moment ago may be on its way to a run being recorded or released
                # (start, _release_one): only one held that long for nothing is reclaimed.
                settled = utc_now() - since > SLOT_SETTLE_TIME
                try:
                    run, _ = self.runs.get(run_id)
                except RunNotFound:
                    if settled:
                        self.slots.give_back(scope, run_id)
                    continue
                if run.finished or (not run.released and settled):
                    self.slots.give_back(scope, run_id)
        return self.release()
