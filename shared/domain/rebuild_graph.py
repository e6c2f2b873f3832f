"""The rebuild graph: which tasks a base change rebuilds, at which level, and where it cycles.

Dispatch (who is queued), waves (the plan and its order), impact (what would rebuild), staleness
(why a stale task was not rebuilt) and the cycle check at `task create` all ask the same questions,
so each answer is defined once, here:

- `trigger_verdict`: does a change of this base rebuild this task? The trigger switch, then the
  trigger type: a build-stage base triggers only under trigger type All.
- `fixed_outputs` / `per_run_outputs` / `is_own_output`: which images a task pushes under fixed
  tags. Only those can be another task's base; a template with `{{.Run.ID}}` names a new tag on
  every run, which nobody can be built FROM. `{{.Run.Registry}}/app:latest` is fixed: the registry
  does not change from run to run.
- `plan`: the tasks a change reaches, transitively, through triggering edges, each once, at the
  level of its longest path (it waits for everything it is built FROM), with the edges that would
  close a cycle left out.
- `layer`: the longest-path levels of any task graph, its cycle-closing edges, and the tasks that
  sit on a cycle (the whole graph the dashboard draws uses it too).
- `find_cycle`: the cycle a task would close, spelled out, for the check at create and update.

The graph is read through callbacks (`plan`'s `dependents_of`), so the same walk runs over the
dependency index (dispatch, one partition read per image) and over the task list in memory (impact).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from shared.domain.image_ref import InvalidReference
from shared.domain.images import render
from shared.domain.tasks import Task
from shared.domain.vocabulary import Outcome, TriggerType

# A template naming a new tag on every run: `app:{{.Run.ID}}`.
_PER_RUN = re.compile(r"\{\{\s*\.Run\.ID\s*\}\}")


@dataclass(frozen=True)
class TriggerVerdict:
    """Whether a change of one base rebuilds one task, and why (not)."""

    triggers: bool
    # Why not, as dispatch records it (None when it triggers).
    outcome: Outcome | None
    reason: str


def trigger_verdict(enabled: bool, trigger_type: TriggerType, runtime: bool) -> TriggerVerdict:
    """Does a change of a base the task is built FROM rebuild it? (`runtime`: the base is in the
    final stage's chain, not only in a build stage.)"""
    if not enabled:
        return TriggerVerdict(False, Outcome.TRIGGER_DISABLED, "the task's base image trigger is disabled")
    if not runtime and trigger_type != TriggerType.ALL:
        return TriggerVerdict(False, Outcome.NOT_RUNTIME,
                              "a build-stage base, and the trigger type is Runtime")
    return TriggerVerdict(True, None,
                          "a runtime base" if runtime else "a build-stage base (trigger type All)")


def is_per_run(template: str) -> bool:
    return bool(_PER_RUN.search(template))


def fixed_outputs(templates: Iterable[str], registry: str | None) -> list[str]:
    """The images a task pushes under fixed tags, rendered, each once: the only ones another task
    can be built FROM. A template that renders to no valid reference pushes nothing (its runs are
    refused), so it is left out."""
    outputs: list[str] = []
    for template in templates:
        if is_per_run(template):
            continue
        try:
            image = render(template, "", registry)
        except InvalidReference:
            continue
        if image not in outputs:
            outputs.append(image)
    return outputs


def per_run_outputs(templates: Iterable[str]) -> list[str]:
    """The templates that name a new tag on every run (listed, never followed)."""
    return [t for t in templates if is_per_run(t)]


def is_own_output(templates: Iterable[str], pushed: str, registry: str | None) -> bool:
    """Is `pushed` one of the images the task itself pushes? (A task never triggers itself.)"""
    return pushed in fixed_outputs(templates, registry)


class Dependent(Protocol):
    """One task built FROM one image, as the walk sees it (a dependency index row is one)."""

    @property
    def task(self) -> str: ...
    @property
    def images(self) -> list[str]: ...


D = TypeVar("D", bound=Dependent)


@dataclass
class Layering:
    """Longest-path levels (1 for a task nothing it waits for comes before), the edges left out
    because they would close a cycle, and the tasks on a cycle."""

    levels: dict[str, int]
    cut: list[tuple[str, str]]
    on_cycle: set[str]
    # task -> the tasks it waits for / that wait for it, cut edges left out.
    waits_for: dict[str, set[str]]
    needed_by: dict[str, set[str]]


def layer(tasks: Iterable[str], edges: Mapping[str, Iterable[str]]) -> Layering:
    """Levels over `edges` (task -> the tasks built FROM its outputs). A depth-first walk in name
    order finds the edges back to a task still on the walk: those close a cycle and are cut, so
    what is left is acyclic and every task gets a level."""
    names = list(dict.fromkeys(tasks))
    after: dict[str, list[str]] = {n: sorted(set(edges.get(n, ())) - {n}) for n in names}
    cut: list[tuple[str, str]] = []
    order: list[str] = []
    state: dict[str, int] = {}  # 1 on the walk's stack, 2 done
    for root in names:
        if state.get(root):
            continue
        stack: list[tuple[str, list[str]]] = [(root, list(after[root]))]
        state[root] = 1
        while stack:
            task, todo = stack[-1]
            if todo:
                nxt = todo.pop()
                if state.get(nxt) == 1:
                    cut.append((task, nxt))
                elif not state.get(nxt):
                    state[nxt] = 1
                    stack.append((nxt, list(after[nxt])))
            else:
                state[task] = 2
                order.append(task)
                stack.pop()
    kept = {n: set(after[n]) for n in names}
    for task, nxt in cut:
        kept[task].discard(nxt)
    levels = dict.fromkeys(names, 1)
    waits_for: dict[str, set[str]] = {n: set() for n in names}
    for task in reversed(order):  # a topological order: every task before what is built on it
        for nxt in kept[task]:
            waits_for[nxt].add(task)
            levels[nxt] = max(levels[nxt], levels[task] + 1)
    return Layering(levels, cut, _on_cycle(names, after), waits_for, kept)


def _on_cycle(names: list[str], after: Mapping[str, list[str]]) -> set[str]:
    """The tasks in a strongly connected component of more than one task (Tarjan's algorithm,
    iterative: a deep chain must not reach Python's recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: set[str] = set()
    counter = 0
    for root in names:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, child = work.pop()
            if child == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            children = after[node]
            if child < len(children):
                work.append((node, child + 1))
                nxt = children[child]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.update(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return found


@dataclass
class PlannedMember(Generic[D]):
    row: D
    level: int
    waits_for: set[str] = field(default_factory=set)
    needed_by: set[str] = field(default_factory=set)


@dataclass
class Plan(Generic[D]):
    members: dict[str, PlannedMember[D]]
    # Edges that would close a cycle (task -> task): left out; a push along one is refused at dispatch.
    cycles: list[tuple[str, str]] = field(default_factory=list)
    # The members on a cycle (its edges include a cut one).
    on_cycle: set[str] = field(default_factory=set)

    @property
    def levels(self) -> int:
        return max((m.level for m in self.members.values()), default=0)


def plan(first: list[D], registry: str | None,
                       dependents_of: Callable[[Iterable[str]], Mapping[str, list[D]]]) -> Plan[D]:
    """What a change rebuilds when `first` are the tasks it triggers directly: every task built
    FROM a member's fixed output, transitively, each once, at the level of its longest path.

    `dependents_of(images)` gives, for each image, the tasks a change of it triggers (the caller
    applies `trigger_verdict`), one batch per level.
    """
    rows: dict[str, D] = {row.task: row for row in first}
    edges: dict[str, set[str]] = {row.task: set() for row in first}
    frontier = list(rows)
    while frontier:
        producers: dict[str, str] = {}
        for task in frontier:
            for image in fixed_outputs(rows[task].images, registry):
                producers.setdefault(image, task)
        found = dependents_of(producers.keys()) if producers else {}
        frontier = []
        for image, dependents in found.items():
            producer = producers[image]
            for row in dependents:
                if row.task == producer:
                    continue  # a task built FROM its own output: no edge, no loop
                edges[producer].add(row.task)
                if row.task not in rows:
                    rows[row.task] = row
                    edges[row.task] = set()
                    frontier.append(row.task)
    layering = layer(rows, edges)
    members = {task: PlannedMember(row=rows[task], level=layering.levels[task],
                                   waits_for=layering.waits_for[task], needed_by=layering.needed_by[task])
               for task in rows}
    return Plan(members=members, cycles=layering.cut, on_cycle=layering.on_cycle)


def spell_cycle(path: list[tuple[str, str]]) -> str:
    """`cyca → cyc/a:latest → cycb → cyc/b:latest → cyca` from [(task, image it pushes), …]."""
    parts: list[str] = []
    for task, image in path:
        parts += [task, image]
    return " → ".join(parts + [path[0][0]])


def find_cycle(task: Task, others: Iterable[Task], registry: str | None) -> list[tuple[str, str]] | None:
    """A path of (task, image it pushes) that leads from `task` back to itself through the tasks
    built FROM each image, if `task` (as it would be saved) closes one; else None.

    Every dependency counts, triggering or not: a cycle that no trigger closes today closes the
    day a trigger is switched on or the type set to All, and that switch is not checked again."""
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
