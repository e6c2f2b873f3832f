"""The dependency graph: what rebuilds, level by level, if a base image changes; and the whole graph.

A task's output images are themselves bases of other tasks, so a change travels: base -> the tasks
built FROM it -> their output images -> the tasks built FROM those, and so on. `ImpactAnalysis`
walks it with the same rules and the same plan as a wave (shared.domain.rebuild_graph), so "what
would rebuild" is what dispatch would queue, at the levels the wave would build it.

Reads. The dependency index answers "who is built FROM X?" in one partition read per image, but a
change reaching 1,000 tasks reaches ~100 images that have dependents and ~900 that have none, and a
partition read costs a few milliseconds each: ~0.5 s. The task list holds the same facts the index
is written from (each task's bases, runtime flags, trigger and output templates; see
service_layer.dependencies), so the whole graph is one read of one partition, with only those
properties selected (`TaskRepository.links`), and the walk is in memory.

Levels. A task's level is its longest triggering path from the changed image (base -> task is one
level): the wave in which it would rebuild, after all of its upstream rebuilt. An edge that would
close a cycle (A's output is B's base and B's output A's) is left out, as the wave leaves it out,
and the tasks on the cycle are marked `cycle`. Tasks that would not rebuild (trigger off, or a
build-stage base under a Runtime trigger) are listed one level below the deepest image that
reaches them, marked, and not followed further: their outputs would not change.

Outputs whose template has `{{.Run.ID}}` name a new tag on every run; nobody can be built FROM a
tag that does not exist yet, so they are listed but not followed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from shared.domain.image_ref import ImageRef
from shared.domain.rebuild_graph import fixed_outputs, layer, per_run_outputs, plan, trigger_verdict
from shared.domain.task_links import TaskLinks
from shared.domain.tasks import Dependency
from shared.domain.vocabulary import TriggerType
from shared.service_layer.ports import TaskRepository


@dataclass(frozen=True)
class _Dependent:
    """A task built FROM one image, as the rebuild plan walks it."""

    task: str
    images: list[str]


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


class ImpactAnalysis:
    def __init__(self, tasks: TaskRepository, registry_host: str | None):
        self.tasks = tasks
        # The registry that image names without a registry host go to.
        self.registry_host = registry_host

    def impact(self, image: str) -> Impact:
        """Every task that would rebuild, transitively, if `image` changed (InvalidReference if it
        is not an image reference). An image nothing is built FROM has an empty impact."""
        root = str(ImageRef.parse(image))
        tasks = {links.name: links for links in self.tasks.links()}
        dependents: dict[str, list[tuple[TaskLinks, Dependency]]] = defaultdict(list)
        for links in sorted(tasks.values(), key=lambda t: t.name):
            for dep in links.dependencies:
                dependents[dep.image].append((links, dep))

        def triggered_by(images: Iterable[str]) -> dict[str, list[_Dependent]]:
            return {img: [_Dependent(links.name, list(links.images)) for links, dep in dependents.get(img, [])
                          if trigger_verdict(links.trigger_enabled, links.trigger_type, dep.runtime).triggers]
                    for img in images}

        rebuild = plan(triggered_by([root])[root], self.registry_host, triggered_by)
        # The images the change reaches: the pushed one (level 0) and the members' fixed outputs.
        image_level = {root: 0}
        for name, member in sorted(rebuild.members.items(), key=lambda item: item[1].level):
            for output in fixed_outputs(tasks[name].images, self.registry_host):
                image_level.setdefault(output, member.level)
        nodes: dict[str, TaskNode] = {}
        for name, member in rebuild.members.items():
            links = tasks[name]
            reason = next(verdict.reason for verdict in (
                trigger_verdict(links.trigger_enabled, links.trigger_type, dep.runtime)
                for dep in links.dependencies if dep.image in image_level) if verdict.triggers)
            nodes[name] = _task_node(links, self.registry_host, member.level, True, reason)
            nodes[name].cycle = name in rebuild.on_cycle
        edges: list[Edge] = []
        for img, level in image_level.items():
            for links, dep in dependents.get(img, []):
                verdict = trigger_verdict(links.trigger_enabled, links.trigger_type, dep.runtime)
                edges.append(Edge(dep.image, links.name, dep.runtime, verdict.triggers))
                if links.name in rebuild.members:
                    continue
                node = nodes.get(links.name)
                if node is None:  # reached, but it would not rebuild: listed, not followed
                    node = nodes[links.name] = _task_node(links, self.registry_host, 0, False, verdict.reason)
                node.level = max(node.level, level + 1)
        ordered = sorted(nodes.values(), key=lambda n: (n.level, n.task))
        return Impact(nodes=ordered, edges=edges, image=root, reads=1)

    def graph(self) -> Graph:
        """Every task and the images they are built FROM (one read of the task list).

        The levels are those of a change to all external bases at once (images no task produces),
        every edge counted, whether it triggers or not: the picture the dashboard draws.
        """
        tasks = sorted(self.tasks.links(), key=lambda t: t.name)
        nodes: dict[str, TaskNode] = {}
        edges: list[Edge] = []
        produced_by: dict[str, str] = {}
        for task in tasks:
            nodes[task.name] = _node(task, self.registry_host)
            for output in nodes[task.name].outputs:
                produced_by.setdefault(output, task.name)
        after: dict[str, set[str]] = defaultdict(set)
        for task in tasks:
            for dep in task.dependencies:
                triggers = trigger_verdict(task.trigger_enabled, task.trigger_type, dep.runtime).triggers
                edges.append(Edge(dep.image, task.name, dep.runtime, triggers))
                producer = produced_by.get(dep.image)
                if producer is not None:
                    after[producer].add(task.name)
        layering = layer(nodes, after)
        for name, node in nodes.items():
            node.level, node.cycle = layering.levels[name], name in layering.on_cycle
        return Graph(nodes=sorted(nodes.values(), key=lambda n: (n.level, n.task)), edges=edges)


def _task_node(links: TaskLinks, registry: str | None, level: int, rebuilds: bool, reason: str) -> TaskNode:
    return TaskNode(links.name, level, rebuilds, reason, links.trigger_enabled, links.trigger_type,
                    fixed_outputs(links.images, registry), per_run_outputs(links.images))


def _node(task: TaskLinks, registry: str | None) -> TaskNode:
    verdict = trigger_verdict(task.trigger_enabled, task.trigger_type,
                              any(d.runtime for d in task.dependencies))
    rebuilds, reason = verdict.triggers, verdict.reason
    if task.trigger_enabled and not task.dependencies:
        rebuilds, reason = False, "the task has no base images"
    return _task_node(task, registry, 0, rebuilds, reason)


def graph_to_dict(graph: Graph) -> dict[str, Any]:
    produced = {out: n.task for n in graph.nodes for out in n.outputs}
    images = sorted({e.base for e in graph.edges})
    return {
        "tasks": [n.to_dict() for n in graph.nodes],
        "images": [{"image": img, "produced_by": produced.get(img)} for img in images],
        "edges": [e.to_dict() for e in graph.edges],
    }
