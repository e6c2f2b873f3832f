"""The dependency graph: what rebuilds, level by level, if a base image changes; and the whole graph.

A task's output images are themselves bases of other tasks, so a change travels: base -> the tasks
built FROM it -> their output images -> the tasks built FROM those, and so on. `ImpactAnalysis`
follows it with dispatch's rules (`trigger_verdict`: the trigger switch, and a build-stage base
triggers only under trigger type All), so "what would rebuild" is what dispatch would queue, level
after level.

Reads. The dependency index answers "who is built FROM X?" in one partition read per image, but a
change reaching 1,000 tasks reaches ~100 images that have dependents and ~900 that have none, and a
partition read costs a few milliseconds each: ~0.5 s. The task list holds the same facts the index
is written from (each task's bases, runtime flags, trigger and output templates; see
service_layer.dependencies), so the whole graph is one read of one partition, with only those
properties selected (`TaskRepository.links`), and the walk is in memory.

Levels. A task's level is the longest triggering path from the changed image (base -> task is one
level; an output image keeps its producer's level): the wave in which it would rebuild, after all
of its upstream rebuilt. Tasks on a cycle of triggering edges (A's output is B's base and B's
output A's) have no such level; they are marked `cycle` and placed after the deepest level that
has one. Tasks that would not rebuild (trigger off, or a build-stage base under a Runtime
trigger) are listed where they are reached, marked, and not followed further: their outputs would
not change.

Outputs whose template has `{{.Run.ID}}` name a new tag on every run; nobody can be built FROM a
tag that does not exist yet, so they are listed but not followed.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from shared.domain.image_ref import ImageRef
from shared.domain.images import render
from shared.domain.links import TaskLinks
from shared.domain.tasks import Dependency
from shared.domain.vocabulary import TriggerType
from shared.service_layer.ports import TaskRepository


def _has_run_placeholder(template: str) -> bool:
    return "{{" in template


def split_outputs(templates: Iterable[str], registry: str | None) -> tuple[list[str], list[str]]:
    """(stable output images, per-run templates): only the former can be another task's base."""
    stable: list[str] = []
    per_run: list[str] = []
    for template in templates:
        if _has_run_placeholder(template):
            per_run.append(template)
            continue
        try:
            image = render(template, "", registry)
        except ValueError:
            continue  # an invalid template never pushes anything (dispatch rejects it)
        if image not in stable:
            stable.append(image)
    return stable, per_run


def trigger_verdict(enabled: bool, trigger_type: TriggerType, runtime: bool) -> tuple[bool, str]:
    """Would a change of this base rebuild the task? And why (not) — dispatch's rules 1 and 2."""
    if not enabled:
        return False, "the task's base image trigger is disabled"
    if not runtime and trigger_type == TriggerType.RUNTIME:
        return False, "a build-stage base, and the trigger type is Runtime"
    return True, "a runtime base" if runtime else "a build-stage base (trigger type All)"


@dataclass
class Edge:
    """`task` is built FROM `base`."""

    base: str
    task: str
    runtime: bool
    triggers: bool

    def to_dict(self) -> dict[str, Any]:
        return {"base": self.base, "task": self.task, "runtime": self.runtime, "triggers": self.triggers}


@dataclass
class TaskNode:
    task: str
    level: int
    rebuilds: bool
    reason: str
    trigger_enabled: bool
    trigger_type: TriggerType
    outputs: list[str] = field(default_factory=list)
    per_run_outputs: list[str] = field(default_factory=list)
    cycle: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "level": self.level, "rebuilds": self.rebuilds, "reason": self.reason,
                "trigger": {"enabled": self.trigger_enabled, "type": str(self.trigger_type)},
                "outputs": list(self.outputs), "per_run_outputs": list(self.per_run_outputs),
                "cycle": self.cycle}


@dataclass
class Graph:
    """Tasks (with levels) and the edges between images and tasks."""

    nodes: list[TaskNode]
    edges: list[Edge]

    def levels(self) -> list[list[TaskNode]]:
        by_level: dict[int, list[TaskNode]] = defaultdict(list)
        for node in self.nodes:
            by_level[node.level].append(node)
        return [sorted(by_level[level], key=lambda n: n.task) for level in sorted(by_level)]


@dataclass
class Impact(Graph):
    image: str = ""
    # Partition reads made (the benchmark prints them next to the time).
    reads: int = 0

    @property
    def rebuilding(self) -> list[TaskNode]:
        return [n for n in self.nodes if n.rebuilds]

    def to_dict(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "rebuilds": len(self.rebuilding),
            "tasks": len(self.nodes),
            "levels": [{"level": level[0].level, "tasks": [n.to_dict() for n in level]}
                       for level in self.levels()],
            "edges": [e.to_dict() for e in self.edges],
        }


def assign_levels(nodes: dict[str, TaskNode], edges: list[Edge], produced_by: dict[str, str],
                  roots: set[str], rebuilding_only: bool = True) -> None:
    """Longest path from `roots` (images at level 0) to each task; tasks on a cycle are marked.

    `produced_by` maps an output image to the task whose run pushes it. With `rebuilding_only`
    (an impact), only triggering edges between rebuilding tasks carry a change, and the other
    tasks sit one level below the deepest image that reaches them; without it (the whole graph)
    every edge counts.
    """
    moving = {name for name, node in nodes.items() if node.rebuilds or not rebuilding_only}
    upstream: dict[str, set[str]] = defaultdict(set)
    downstream: dict[str, set[str]] = defaultdict(set)
    for edge in edges:
        producer = produced_by.get(edge.base)
        if (producer in moving and edge.task in moving and producer != edge.task
                and (edge.triggers or not rebuilding_only)):
            upstream[edge.task].add(producer)
            downstream[producer].add(edge.task)
    waiting = {name: len(upstream[name]) for name in moving}
    level = dict.fromkeys(moving, 1)
    ready = deque(sorted(name for name in moving if waiting[name] == 0))
    while ready:  # Kahn's order: a task's level is final once all its upstream tasks are placed
        name = ready.popleft()
        for after in sorted(downstream[name]):
            level[after] = max(level[after], level[name] + 1)
            waiting[after] -= 1
            if waiting[after] == 0:
                ready.append(after)
    deepest = max((level[n] for n in moving if waiting[n] == 0), default=0)
    for name in moving:
        nodes[name].level = level[name]
        if waiting[name]:
            nodes[name].cycle = True
            nodes[name].level = max(level[name], deepest + 1)
    image_level = {image: nodes[task].level for image, task in produced_by.items() if task in moving}
    for edge in edges:
        node = nodes[edge.task]
        if edge.task not in moving:
            base_level = 0 if edge.base in roots else image_level.get(edge.base, 0)
            node.level = max(node.level, base_level + 1)


class ImpactAnalysis:
    def __init__(self, tasks: TaskRepository, registry: str | None):
        self.tasks = tasks
        self.registry = registry

    def impact(self, image: str) -> Impact:
        """Every task that would rebuild, transitively, if `image` changed (InvalidReference if it
        is not an image reference). An image nothing is built FROM has an empty impact."""
        root = str(ImageRef.parse(image))
        dependents: dict[str, list[tuple[TaskLinks, Dependency]]] = defaultdict(list)
        for links in sorted(self.tasks.links(), key=lambda t: t.name):
            for dep in links.dependencies:
                dependents[dep.image].append((links, dep))
        nodes: dict[str, TaskNode] = {}
        edges: list[Edge] = []
        produced_by: dict[str, str] = {}
        expanded: set[str] = set()
        seen_images = {root}
        frontier = [root]
        while frontier:  # breadth first: the first producer found of an image is the nearest
            following: list[str] = []
            for base in frontier:
                for links, dep in dependents.get(base, []):
                    following.extend(
                        self._visit(links, dep, nodes, edges, produced_by, expanded, seen_images))
            frontier = following
        assign_levels(nodes, edges, produced_by, {root})
        ordered = sorted(nodes.values(), key=lambda n: (n.level, n.task))
        return Impact(nodes=ordered, edges=edges, image=root, reads=1)

    def _visit(self, links: TaskLinks, dep: Dependency, nodes: dict[str, TaskNode], edges: list[Edge],
               produced_by: dict[str, str], expanded: set[str], seen_images: set[str]) -> list[str]:
        """Record that `links.name` is built FROM `dep.image`; returns the output images to follow next."""
        triggers, reason = trigger_verdict(links.trigger_enabled, links.trigger_type, dep.runtime)
        edges.append(Edge(dep.image, links.name, dep.runtime, triggers))
        node = nodes.get(links.name)
        if node is None:
            stable, per_run = split_outputs(links.images, self.registry)
            node = nodes[links.name] = TaskNode(links.name, 0, triggers, reason, links.trigger_enabled,
                                                links.trigger_type, stable, per_run)
        elif triggers and not node.rebuilds:  # reached again, this time through a triggering base
            node.rebuilds, node.reason = True, reason
        if not triggers or links.name in expanded:
            return []
        expanded.add(links.name)
        follow = []
        for output in node.outputs:
            produced_by.setdefault(output, links.name)
            if output not in seen_images:
                seen_images.add(output)
                follow.append(output)
        return follow

    def graph(self) -> Graph:
        """Every task and the images they are built FROM (one read of the task list).

        The levels are those of a change to all external bases at once (images no task produces):
        the picture the dashboard draws.
        """
        tasks = sorted(self.tasks.links(), key=lambda t: t.name)
        nodes: dict[str, TaskNode] = {}
        edges: list[Edge] = []
        produced_by: dict[str, str] = {}
        for task in tasks:
            nodes[task.name] = _node(task, self.registry)
            for output in nodes[task.name].outputs:
                produced_by.setdefault(output, task.name)
        for task in tasks:
            for dep in task.dependencies:
                triggers, _ = trigger_verdict(task.trigger_enabled, task.trigger_type, dep.runtime)
                edges.append(Edge(dep.image, task.name, dep.runtime, triggers))
        externals = {e.base for e in edges if e.base not in produced_by}
        assign_levels(nodes, edges, produced_by, externals, rebuilding_only=False)
        return Graph(nodes=sorted(nodes.values(), key=lambda n: (n.level, n.task)), edges=edges)


def _node(task: TaskLinks, registry: str | None) -> TaskNode:
    stable, per_run = split_outputs(task.images, registry)
    rebuilds, reason = trigger_verdict(task.trigger_enabled, task.trigger_type,
                                       any(d.runtime for d in task.dependencies))
    if task.trigger_enabled and not task.dependencies:
        rebuilds, reason = False, "the task has no base images"
    return TaskNode(task.name, 0, rebuilds, reason, task.trigger_enabled, task.trigger_type, stable,
                    per_run)


def graph_to_dict(graph: Graph) -> dict[str, Any]:
    produced = {out: n.task for n in graph.nodes for out in n.outputs}
    images = sorted({e.base for e in graph.edges})
    return {
        "tasks": [n.to_dict() for n in graph.nodes],
        "images": [{"image": img, "produced_by": produced.get(img)} for img in images],
        "edges": [e.to_dict() for e in graph.edges],
    }
