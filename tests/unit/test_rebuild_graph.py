"""The rebuild graph (shared/domain/rebuild_graph.py): one answer to "what does this base change
rebuild, in which order", whoever asks.

The property: over random task graphs (diamonds, chains, cycles formed outside the service,
disabled triggers, build-stage bases under both trigger types, fixed, `{{.Run.Registry}}` and
per-run output templates), the levels `base impact` prints equal the levels of the wave the push
plans, and the runs dispatch creates (the wave played to its end, each push of a built image
dispatched as the registry's webhook would) are exactly the tasks impact says rebuild, each once.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from shared.domain.builds import BuildResult
from shared.domain.events import ImagePushed
from shared.domain.rebuild_graph import fixed_outputs, is_own_output, layer, per_run_outputs, trigger_verdict
from shared.domain.tasks import Dependency, Task
from shared.domain.vocabulary import EventSource, Outcome, RunStatus, TriggerType
from shared.service_layer.impact import ImpactAnalysis
from tests.fakes import FakeApp

REGISTRY = "localhost:5000"
OLD = "sha256:" + "0" * 64
NEW = "sha256:" + "1" * 64


def ref(name: str) -> str:
    return f"{REGISTRY}/{name}:latest"


# ---- the rules, one by one ----------------------------------------------------------------------

def test_a_registry_placeholder_names_a_fixed_output():
    templates = ["{{.Run.Registry}}/app:latest", "app:{{.Run.ID}}", "{{ .Run.ID }}-x/y:1", "app:latest"]
    assert fixed_outputs(templates, REGISTRY) == [ref("app")]
    assert per_run_outputs(templates) == ["app:{{.Run.ID}}", "{{ .Run.ID }}-x/y:1"]
    assert is_own_output(["{{.Run.Registry}}/app:latest"], ref("app"), REGISTRY)


def test_an_invalid_template_pushes_nothing():
    assert fixed_outputs(["Not Valid:1", "ok:1"], REGISTRY) == [f"{REGISTRY}/ok:1"]


def test_the_trigger_verdicts():
    assert trigger_verdict(False, TriggerType.ALL, True).outcome == Outcome.TRIGGER_DISABLED
    assert trigger_verdict(True, TriggerType.RUNTIME, False).outcome == Outcome.NOT_RUNTIME
    assert trigger_verdict(True, TriggerType.ALL, False).triggers
    assert trigger_verdict(True, TriggerType.RUNTIME, True).triggers


def test_layer_cuts_a_cycle_and_marks_every_task_on_it():
    # a -> b -> c -> a, and d hanging off c; c -> b through a cross edge the walk meets late.
    layering = layer(["a", "b", "c", "d"], {"a": ["b"], "b": ["c"], "c": ["a", "d"]})
    assert layering.cut == [("c", "a")]
    assert layering.levels == {"a": 1, "b": 2, "c": 3, "d": 4}
    assert layering.on_cycle == {"a", "b", "c"}
    cross = layer(["a", "b", "c"], {"a": ["b", "c"], "b": ["a"], "c": ["b"]})
    assert cross.on_cycle == {"a", "b", "c"}  # c is on a -> c -> b -> a, though no edge of c is cut


def test_a_deep_chain_is_no_recursion():
    names = [f"t{i}" for i in range(5000)]
    layering = layer(names, {a: [b] for a, b in zip(names, names[1:], strict=False)})
    assert layering.levels["t4999"] == 5000 and layering.on_cycle == set()


# ---- the property -------------------------------------------------------------------------------

@st.composite
def task_graphs(draw: st.DrawFn) -> list[Task]:
    count = draw(st.integers(1, 7))
    names = [f"t{i}" for i in range(count)]
    outputs = {name: f"o{i}" for i, name in enumerate(names)}
    externals = ["base", "other"]
    tasks = []
    for name in names:
        shape = draw(st.sampled_from(["fixed", "registry", "per-run", "both"]))
        images = {"fixed": [f"{outputs[name]}:latest"],
                  "registry": [f"{{{{.Run.Registry}}}}/{outputs[name]}:latest"],
                  "per-run": [f"{outputs[name]}:{{{{.Run.ID}}}}"],
                  "both": [f"{outputs[name]}:latest", f"{outputs[name]}:{{{{.Run.ID}}}}"]}[shape]
        # Any image may be a base, its own output and other tasks' outputs included (cycles).
        candidates = externals + [outputs[n] for n in names]
        bases = draw(st.lists(st.sampled_from(candidates), min_size=1, max_size=3, unique=True))
        dependencies = [Dependency(ref(base), OLD, draw(st.booleans())) for base in bases]
        tasks.append(Task(name=name, images=images, context=f"/ctx/{name}",
                          trigger_enabled=draw(st.booleans() | st.just(True)),
                          trigger_type=draw(st.sampled_from([TriggerType.RUNTIME, TriggerType.ALL])),
                          dependencies=dependencies))
    return tasks


def _push(app: FakeApp, name: str, digest: str, n: int) -> None:
    app.dispatcher.handle(ImagePushed(f"push-{name}-{n}", REGISTRY, name, "latest", digest,
                                      datetime.now(UTC), EventSource.DISTRIBUTION))


def _play(app: FakeApp) -> None:
    """Build every sent message as the worker would; a build pushes its fixed outputs."""
    done = 0
    while done < len(app.queue.sent):
        run_id = app.queue.sent[done]
        done += 1
        run, _ = app.runs.get(run_id)
        app.builder.result = BuildResult(RunStatus.SUCCEEDED, output_digest=f"sha256:{done:064x}")
        finished = app.worker.execute(run_id)
        if finished is None or not run.task:
            continue
        for image in fixed_outputs(app.task_store.get(run.task).images, REGISTRY):
            _push(app, image.removeprefix(f"{REGISTRY}/").removesuffix(":latest"),
                  finished.output_digest or NEW, done)


@given(task_graphs())
def test_impact_the_wave_and_dispatch_agree(tasks: list[Task]):
    with tempfile.TemporaryDirectory() as work:
        app = FakeApp(Path(work), REGISTRY)
        for task in tasks:  # written directly: cycles the create-time check would refuse get in
            app.sources.dockerfiles[task.context] = "".join(f"FROM {d.image}\n" for d in task.dependencies)
            app.task_store.create(task)
            app.index.sync_task(task, previous=[])

        impact = ImpactAnalysis(app.task_store, REGISTRY).impact(ref("base"))
        impact_levels = {node.task: node.level for node in impact.nodes if node.rebuilds}

        _push(app, "base", NEW, 0)
        planned = app.wave_store.members("w1") if impact_levels else []
        wave_levels = {member.task: member.level for member in planned}
        assert wave_levels == impact_levels

        _play(app)
        built = sorted(run.task or "" for run in app.runs.all())
        assert built == sorted(impact_levels)  # each task impact names, once, and nothing else
        assert all(run.status == RunStatus.SUCCEEDED for run in app.runs.all())
