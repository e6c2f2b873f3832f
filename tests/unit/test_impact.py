"""Impact and the whole graph on in-memory fakes: levels, trigger marks, cycles, reads made."""

import pytest

from shared.domain.image_ref import InvalidReference
from shared.domain.tasks import Dependency, Task
from shared.domain.vocabulary import TriggerType
from shared.service_layer.impact import ImpactAnalysis
from tests.fakes import FakeApp

REGISTRY = "localhost:5000"
BASE = f"{REGISTRY}/base:1"


def ref(name: str) -> str:
    return f"{REGISTRY}/{name}"


class CountingTasks:
    """The fake task repository, counting reads of the task list."""

    def __init__(self, store):
        self.store = store
        self.reads = 0

    def links(self):
        self.reads += 1
        return self.store.links()


@pytest.fixture
def app(tmp_path):
    return FakeApp(tmp_path, REGISTRY)


@pytest.fixture
def analysis(app):
    counting = CountingTasks(app.task_store)
    analysis = ImpactAnalysis(counting, REGISTRY)
    analysis.counting = counting
    return analysis


def add(app, name, bases, images=None, enabled=True, trigger_type=TriggerType.RUNTIME):
    """`bases`: images (runtime) or (image, runtime) pairs."""
    deps = [Dependency(b, "sha256:" + "0" * 64, True) if isinstance(b, str) else Dependency(b[0], None, b[1])
            for b in bases]
    task = Task(name=name, images=images or [f"{name}:{{{{.Run.ID}}}}"], context="/ctx",
                trigger_enabled=enabled, trigger_type=trigger_type, dependencies=deps)
    app.task_store.create(task)
    app.index.sync_task(task, previous=[])
    return task


def levels(impact):
    return [[n.task for n in level] for level in impact.levels()]


def test_a_chain_rebuilds_level_by_level_and_follows_only_stable_outputs(app, analysis):
    add(app, "mid", [BASE], images=["mid:1", "mid:{{.Run.ID}}"])
    add(app, "app", [ref("mid:1")])
    add(app, "other", [ref("unrelated:1")])
    impact = analysis.impact(BASE)
    assert levels(impact) == [["mid"], ["app"]]
    mid = impact.nodes[0]
    assert (mid.outputs, mid.per_run_outputs) == ([ref("mid:1")], ["mid:{{.Run.ID}}"])
    assert all(n.rebuilds for n in impact.nodes)
    assert analysis.counting.reads == 1 and impact.reads == 1  # one read of the task list


def test_a_task_reached_twice_sits_at_its_longest_path(app, analysis):
    add(app, "mid", [BASE], images=["mid:1"])
    add(app, "app", [BASE, ref("mid:1")])
    assert levels(analysis.impact(BASE)) == [["mid"], ["app"]]


def test_disabled_and_build_stage_tasks_are_marked_and_not_followed(app, analysis):
    add(app, "off", [BASE], images=["off:1"], enabled=False)
    add(app, "stage", [(BASE, False)], images=["stage:1"])
    add(app, "stage-all", [(BASE, False)], images=["all:1"], trigger_type=TriggerType.ALL)
    add(app, "below-off", [ref("off:1")])
    add(app, "below-stage", [ref("stage:1")])
    add(app, "below-all", [ref("all:1")])
    impact = analysis.impact(BASE)
    by_name = {n.task: n for n in impact.nodes}
    assert set(by_name) == {"off", "stage", "stage-all", "below-all"}
    assert not by_name["off"].rebuilds and "disabled" in by_name["off"].reason
    assert not by_name["stage"].rebuilds and "Runtime" in by_name["stage"].reason
    assert by_name["stage-all"].rebuilds and by_name["below-all"].level == 2
    edge = next(e for e in impact.edges if e.task == "stage")
    assert (edge.runtime, edge.triggers) == (False, False)
    assert impact.to_dict()["rebuilds"] == 2


def test_a_cycle_is_marked_and_ends(app, analysis):
    add(app, "a", [BASE, ref("b:1")], images=["a:1"])
    add(app, "b", [ref("a:1")], images=["b:1"])
    impact = analysis.impact(BASE)
    assert {n.task for n in impact.nodes} == {"a", "b"}
    assert all(n.cycle for n in impact.nodes)


def test_unknown_image_has_an_empty_impact_and_invalid_refs_are_refused(app, analysis):
    add(app, "mid", [BASE])
    assert analysis.impact(ref("nobody:1")).to_dict()["levels"] == []
    with pytest.raises(InvalidReference):
        analysis.impact("Not/Valid")


def test_short_names_are_read_as_a_from_line_reads_them(app, analysis):
    add(app, "node-app", ["docker.io/library/node:20"])
    assert [n.task for n in analysis.impact("node:20").nodes] == ["node-app"]


def test_the_whole_graph_levels_every_task_from_the_external_bases(app, analysis):
    add(app, "mid", [BASE], images=["mid:1"])
    add(app, "app", [ref("mid:1")])
    add(app, "off", [ref("mid:1")], enabled=False)
    graph = analysis.graph()
    assert levels(graph) == [["mid"], ["app", "off"]]
    assert analysis.counting.reads == 1  # the task list alone
