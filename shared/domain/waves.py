"""Waves: everything one base change starts, cascades included, rebuilt in order and once.

A wave is planned when it starts: its members are the tasks that would rebuild, transitively,
each at the level of its longest path from the change, each waiting for the members it is built
FROM. A member is released (its run gets a queue message) when every member it waits for has
succeeded, and only while the wave and the service have capacity; a failure cancels what was built
on it, and the first failures of a wave trip its circuit breaker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.domain.dependencies import DependencyRow
from shared.domain.images import fixed_outputs
from shared.domain.tasks import Task
from shared.domain.vocabulary import RunStatus, WaveState, format_time, utc_now

SCHEMA_VERSION = 1


class WaveNotFound(LookupError):
    pass


class WaveConflict(ValueError):
    """The wave is not in a state that allows this (resume a wave that is not held, …)."""


@dataclass(frozen=True)
class Brakes:
    """Caps and the circuit breaker (settings: BASETRIGGER_MAX_RUNNING, BASETRIGGER_WAVE_*)."""

    max_running: int = 8  # builds of all waves running at once
    wave_max_running: int = 4  # builds of one wave running at once
    breaker_first_failures: int = 3  # the first K finished runs of a wave all failed: hold it
    breaker_failure_share: float = 0.5  # or more than this share of its finished runs failed

    def trips(self, finished: int, failed: int) -> bool:
        if failed == 0:
            return False
        if failed >= self.breaker_first_failures and failed == finished:
            return True
        return finished >= self.breaker_first_failures and failed / finished > self.breaker_failure_share


@dataclass
class Wave:
    wave_id: str
    root: str  # what started it: "<base>@<digest>" or "manual run da5"
    event_id: str | None
    state: WaveState = WaveState.ACTIVE
    levels: int = 1
    # Members by how their runs stand (RunStatus values; "Waiting" for runs not released yet).
    counts: dict[str, int] = field(default_factory=dict)
    reason: str | None = None
    # Finished and failed builds when the wave was last resumed: the breaker counts from there.
    breaker_base: tuple[int, int] = (0, 0)
    created_at: datetime = field(default_factory=utc_now)

    def to_record(self) -> dict[str, Any]:
        return {"wave_id": self.wave_id, "root": self.root, "event_id": self.event_id,
                "state": str(self.state), "levels": self.levels, "counts": self.counts,
                "reason": self.reason, "breaker_base": list(self.breaker_base),
                "created_at": self.created_at.isoformat()}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Wave:
        values = dict(record)
        values["state"] = WaveState(values["state"])
        values["breaker_base"] = tuple(values.get("breaker_base") or (0, 0))
        values["created_at"] = datetime.fromisoformat(values["created_at"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        data = self.to_record()
        data["created_at"] = format_time(self.created_at)
        return data


@dataclass
class Member:
    """One task of a wave: its run, its level, and the members it waits for / that wait for it."""

    wave_id: str
    task: str
    run_id: str
    level: int
    waits_for: list[str] = field(default_factory=list)
    needed_by: list[str] = field(default_factory=list)
    # The members it waits for that have succeeded (a set in effect: adding twice changes nothing).
    arrived: list[str] = field(default_factory=list)
    released: bool = False
    # How its run ended, once the wave has taken note of it.
    outcome: RunStatus | None = None
    etag: str | None = None

    @property
    def ready(self) -> bool:
        return set(self.waits_for) <= set(self.arrived)

    def to_record(self) -> dict[str, Any]:
        return {"wave_id": self.wave_id, "task": self.task, "run_id": self.run_id, "level": self.level,
                "waits_for": self.waits_for, "needed_by": self.needed_by, "arrived": self.arrived,
                "released": self.released, "outcome": str(self.outcome) if self.outcome else None}

    @classmethod
    def from_record(cls, record: dict[str, Any], etag: str | None = None) -> Member:
        values = dict(record)
        values["outcome"] = RunStatus(values["outcome"]) if values.get("outcome") else None
        return cls(**values, etag=etag)


@dataclass
class PlannedMember:
    row: DependencyRow
    level: int
    waits_for: set[str] = field(default_factory=set)
    needed_by: set[str] = field(default_factory=set)


@dataclass
class Plan:
    members: dict[str, PlannedMember]
    # Edges that would close a cycle (task -> task): left out; a push along one is refused at dispatch.
    cycles: list[tuple[str, str]] = field(default_factory=list)

    @property
    def levels(self) -> int:
        return max((m.level for m in self.members.values()), default=0)


def plan(first: list[DependencyRow], outputs_of: Callable[[DependencyRow], list[str]],
         dependents_of: Callable[[Iterable[str]], dict[str, list[DependencyRow]]]) -> Plan:
    """The members of a wave whose first level is `first`: every task built FROM a member's output,
    transitively, at the level of its longest path; a task enters once.

    `outputs_of(row)` names the images a task pushes under fixed tags (per-run tags name no base);
    `dependents_of(images)` reads the rows that would trigger on each image (one batch per level).
    """
    rows: dict[str, DependencyRow] = {row.task: row for row in first}
    edges: dict[str, set[str]] = {row.task: set() for row in first}
    frontier = list(rows)
    while frontier:
        images = {image: task for task in frontier for image in outputs_of(rows[task])}
        found = dependents_of(images.keys()) if images else {}
        frontier = []
        for image, dependents in found.items():
            producer = images[image]
            for row in dependents:
                if row.task == producer:
                    continue  # a task built FROM its own output: no edge, no loop
                edges[producer].add(row.task)
                if row.task not in rows:
                    rows[row.task] = row
                    edges[row.task] = set()
                    frontier.append(row.task)

    # Longest-path levels over the graph without its cycle-closing edges (found by a depth-first
    # walk: an edge back to a task still on the walk's stack closes a cycle).
    cycles: list[tuple[str, str]] = []
    order: list[str] = []
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    for root in rows:
        if state.get(root):
            continue
        stack: list[tuple[str, list[str]]] = [(root, sorted(edges[root]))]
        state[root] = 1
        while stack:
            task, todo = stack[-1]
            if todo:
                nxt = todo.pop()
                if state.get(nxt) == 1:
                    cycles.append((task, nxt))
                elif not state.get(nxt):
                    state[nxt] = 1
                    stack.append((nxt, sorted(edges[nxt])))
            else:
                state[task] = 2
                order.append(task)
                stack.pop()
    for task, nxt in cycles:
        edges[task].discard(nxt)
    members = {task: PlannedMember(row=rows[task], level=1) for task in rows}
    for task in reversed(order):  # a topological order: every task before what is built on it
        for nxt in edges[task]:
            members[nxt].waits_for.add(task)
            members[task].needed_by.add(nxt)
            members[nxt].level = max(members[nxt].level, members[task].level + 1)
    return Plan(members=members, cycles=cycles)


def spell_cycle(path: list[tuple[str, str]]) -> str:
    """`cyca → cyc/a:latest → cycb → cyc/b:latest → cyca` from [(task, image it pushes), …]."""
    parts: list[str] = []
    for task, image in path:
        parts += [task, image]
    return " → ".join(parts + [path[0][0]])


def find_cycle(task: Task, others: Iterable[Task], registry: str | None) -> list[tuple[str, str]] | None:
    """A path of (task, image it pushes) that leads from `task` back to itself through the tasks
    built FROM each image, if `task` (as it would be saved) closes one; else None."""
    tasks = {t.name: t for t in others}
    tasks[task.name] = task
    built_from: dict[str, list[str]] = {}  # image -> tasks built FROM it
    for t in tasks.values():
        for dep in t.dependencies:
            built_from.setdefault(dep.image, []).append(t.name)

    def edges(name: str) -> list[tuple[str, str]]:
        return [(image, nxt) for image in fixed_outputs(tasks[name].images, registry)
                for nxt in sorted(built_from.get(image, [])) if nxt != name]

    stack: list[tuple[str, list[tuple[str, str]]]] = [(task.name, edges(task.name))]
    path: list[tuple[str, str]] = []
    seen = {task.name}
    while stack:
        name, todo = stack[-1]
        if not todo:
            stack.pop()
            if path:
                path.pop()
            continue
        image, nxt = todo.pop()
        if nxt == task.name:
            return [*path, (name, image)]
        if nxt in seen:
            continue
        seen.add(nxt)
        path.append((name, image))
        stack.append((nxt, edges(nxt)))
    return None
