"""Staleness: the tasks whose last build used a base digest that is no longer the base's current one,
since when, and why no rebuild happened (the "missed trigger" report).

What "built on" means: each task dependency carries the digest the task last built on (a successful
run writes it; at creation it is the digest the base had then).

What "current" means, in this order:
1. the registry, asked now: a manifest HEAD per distinct base (nothing pulled), several at a time;
2. when the registry cannot be asked, the newest push event basetrigger recorded for the base (its
   decisions). Polling registries (another issue) will make (2) fresher; until then a tag moved
   without a notification is found by (1) and reported as `no-event`.
A base that neither source can tell about is reported `unknown` with the cause `base-unreachable`:
it may be stale, and nobody can know.

Since when: the time of the first recorded push of another digest after the one the task built
on (from the base's newest decisions); null when no such push was recorded (the tag moved without
an event, or before the decisions read).

Why no rebuild, the first that applies:
- trigger-disabled            the task's base image trigger is off
- not-a-runtime-dependency    a build-stage base, and the trigger type is Runtime
- wave-held                   the task's newest run is Held by its wave's circuit breaker, or waits
                              in a wave that is Held (`wave resume` or `wave cancel` decides)
- rebuild-pending             the task's newest run is Queued or Running
- run-failed                  the run queued for the new digest (or the task's newest run) did not succeed
- <a decision outcome>        what dispatch decided for the push of the current digest (coalesced,
                              already-triggered, rejected, …) with its reason
- no-event                    the registry's tag moved but no push event for that digest was recorded
- base-unreachable            the registry cannot be asked now (then the digest came from events)
Cycles are not reported here: a wave never re-enters a task, so a cycle rebuilds each of its tasks
once per change rather than never (`base impact` marks cycles).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from shared.domain.decisions import Decision
from shared.domain.rebuild_graph import trigger_verdict
from shared.domain.runs import Run, RunNotFound
from shared.domain.task_links import TaskLinks
from shared.domain.tasks import Dependency
from shared.domain.vocabulary import TERMINAL, Outcome, RunStatus, WaveState, format_time
from shared.domain.waves import Wave, WaveNotFound
from shared.service_layer.ports import DecisionLog, Registry, RunReader, TaskRepository, WaveRepository

# Registry HEADs and table reads in flight at once.
LOOKUPS_IN_FLIGHT = 8
# Newest decisions read per base: enough to find the push of the current digest and when the base
# moved away from the built one, while bounding the read.
HISTORY_PER_BASE = 20


class Cause(StrEnum):
    # Why a base change would not rebuild the task: the words dispatch records (rebuild_graph).
    TRIGGER_DISABLED = Outcome.TRIGGER_DISABLED.value
    NOT_RUNTIME = Outcome.NOT_RUNTIME.value
    WAVE_HELD = "wave-held"
    REBUILD_PENDING = "rebuild-pending"
    RUN_FAILED = "run-failed"
    NO_EVENT = "no-event"
    BASE_UNREACHABLE = "base-unreachable"


class State(StrEnum):
    STALE = "stale"
    UNKNOWN = "unknown"  # the current digest could not be had


@dataclass
class BaseNow:
    """What is known about one base now."""

    image: str
    registry_digest: str | None
    pushes: list[Decision] = field(default_factory=list)  # newest first, each with a digest

    @property
    def current(self) -> tuple[str | None, str | None]:
        """(digest, where it came from)."""
        if self.registry_digest:
            return self.registry_digest, "registry"
        if self.pushes:
            return self.pushes[0].digest, "events"
        return None, None


@dataclass
class StaleEntry:
    task: str
    base: str
    runtime: bool
    state: State
    built_digest: str | None
    current_digest: str | None
    source: str | None
    since: datetime | None
    cause: str
    reason: str
    event_id: str | None = None
    run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "base": self.base, "runtime": self.runtime, "state": str(self.state),
                "built_digest": self.built_digest, "current_digest": self.current_digest,
                "source": self.source, "since": format_time(self.since), "cause": self.cause,
                "reason": self.reason, "event_id": self.event_id, "run_id": self.run_id}


class StalenessReport:
    def __init__(self, tasks: TaskRepository, runs: RunReader, decisions: DecisionLog,
                 registry: Registry, waves: WaveRepository | None = None):
        self.tasks = tasks
        self.runs = runs
        self.decisions = decisions
        self.registry = registry
        # Without it, a run Held by its wave's breaker is still told apart (its own status); with
        # it, so is a run still Queued in a wave that is Held.
        self.waves = waves
        self._pool = ThreadPoolExecutor(max_workers=LOOKUPS_IN_FLIGHT, thread_name_prefix="stale")

    def report(self) -> tuple[list[StaleEntry], dict[str, int]]:
        """The stale (and unknown) entries, oldest `since` first, and what was checked."""
        tasks = self.tasks.links()  # names, triggers and bases: nothing to unseal
        pairs = [(task, dep) for task in tasks for dep in task.dependencies if dep.digest]
        images = sorted({dep.image for _, dep in pairs})
        bases = dict(zip(images, self._pool.map(self._base_now, images), strict=True))
        candidates = [(task, dep) for task, dep in pairs if bases[dep.image].current[0] != dep.digest]
        entries = list(self._pool.map(lambda pair: self._entry(pair[0], pair[1], bases[pair[1].image]),
                                      candidates))
        entries.sort(key=lambda e: (e.state != State.STALE, e.since is None, e.since or datetime.max,
                                    e.task, e.base))
        return entries, {"tasks": len(tasks), "bases": len(images), "dependencies": len(pairs)}

    def _base_now(self, image: str) -> BaseNow:
        pushes = [d for d in self.decisions.recent(top=HISTORY_PER_BASE, image=image) if d.digest]
        return BaseNow(image, self.registry.resolve_digest(image), pushes)

    def _entry(self, task: TaskLinks, dep: Dependency, base: BaseNow) -> StaleEntry:
        current, source = base.current
        entry = StaleEntry(task.name, dep.image, dep.runtime, State.STALE, dep.digest, current, source,
                           _since(base.pushes, dep.digest), "", "")
        if current is None:
            entry.state = State.UNKNOWN
            entry.cause, entry.reason = (Cause.BASE_UNREACHABLE,
                                         "the registry cannot be asked and no push of this base was recorded")
            return entry
        entry.cause, entry.reason = self._why(task, dep, base, current, entry)
        if source == "events":
            entry.reason += " (the registry cannot be asked now: the current digest is the last pushed one)"
        return entry

    def _why(self, task: TaskLinks, dep: Dependency, base: BaseNow, current: str,
             entry: StaleEntry) -> tuple[str, str]:
        verdict = trigger_verdict(task.trigger_enabled, task.trigger_type, dep.runtime)
        if verdict.outcome is not None:
            return str(verdict.outcome), verdict.reason
        newest, _ = self.runs.newest(task=task.name, top=1)
        latest = newest[0] if newest else None
        if latest is not None and latest.status not in TERMINAL:
            entry.run_id = latest.run_id
            held = self._held(latest)
            if held is not None:
                return Cause.WAVE_HELD, held
            return Cause.REBUILD_PENDING, f"run {latest.run_id} is {latest.status}"
        push = next((d for d in base.pushes if d.digest == current), None)
        if push is not None:
            entry.event_id = push.event_id
            detail = next((t for t in push.tasks if t.task == task.name), None)
            run_id = detail.run_id if detail else None
            run = self._run(run_id) if run_id else None
            if run is not None and run.status != RunStatus.SUCCEEDED:
                entry.run_id = run.run_id
                return Cause.RUN_FAILED, (f"run {run.run_id} {run.status}: "
                                          f"{run.reason or 'no reason recorded'}")
            if detail is not None and run is None:
                return str(detail.outcome), detail.reason
        if latest is not None and latest.status != RunStatus.SUCCEEDED:
            entry.run_id = latest.run_id
            return Cause.RUN_FAILED, (f"the newest run {latest.run_id} {latest.status}: "
                                      f"{latest.reason or 'no reason recorded'}")
        if push is None:
            return Cause.NO_EVENT, (f"the tag points at {current}, but no push event for it was recorded "
                                    "(a missed notification; polling is not built yet)")
        return str(push.outcome), push.reason

    def _held(self, run: Run) -> str | None:
        """Why `run` (not finished) waits on a held wave, or None if it does not. A run its wave
        released before the hold builds anyway: that is a pending rebuild."""
        waiting = run.status == RunStatus.QUEUED and not run.released
        wave = self._wave(run.wave_id) if run.wave_id and waiting else None
        wave_held = wave is not None and wave.state == WaveState.HELD
        if run.status != RunStatus.HELD and not wave_held:
            return None
        why = (wave.reason if wave is not None and wave_held else None) or run.reason or "no reason recorded"
        if "wave resume" not in why:
            why += f"; `basetrigger wave resume {run.wave_id or 'WAVE'}` or `wave cancel` decides"
        return f"run {run.run_id} is {run.status} in wave {run.wave_id or '?'}, which is held: {why}"

    def _wave(self, wave_id: str) -> Wave | None:
        if self.waves is None:
            return None
        try:
            return self.waves.get(wave_id)[0]
        except WaveNotFound:
            return None

    def _run(self, run_id: str) -> Run | None:
        try:
            return self.runs.get(run_id)[0]
        except RunNotFound:
            return None


def _since(pushes: list[Decision], built: str | None) -> datetime | None:
    """The first push of another digest after the last push of the built one (pushes newest first)."""
    since = None
    for push in pushes:
        if push.digest == built:
            break
        since = push.time
    return since
