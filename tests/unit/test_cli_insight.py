"""How the CLI shows impacts (tree, DOT, Mermaid), decisions, task verdicts and stale tasks."""

import pytest

from cli.decision_cmd import decisions_table
from cli.graph_output import impact_dot, impact_mermaid, impact_tree
from cli.main import main
from cli.task_insight import stale_table, why_table
from shared.domain.tasks import Dependency, Task
from shared.service_layer.impact import ImpactAnalysis
from tests.fakes import FakeApp

R = "localhost:5000"


@pytest.fixture
def impact(tmp_path):
    """A real impact (the service on fakes): base -> mid -> app, and a disabled task beside mid."""
    app = FakeApp(tmp_path, R)
    for name, base, images, enabled, runtime in (
            ("mid", f"{R}/base:1", ["mid:1"], True, True),
            ("app", f"{R}/mid:1", ["app:{{.Run.ID}}"], True, True),
            ("off", f"{R}/base:1", ["off:1"], False, True),
            ("tools", f"{R}/base:1", ["tools:1"], True, False)):
        task = Task(name=name, images=images, context="/c", trigger_enabled=enabled,
                    dependencies=[Dependency(base, None, runtime)])
        app.task_store.create(task)
        app.index.sync_task(task, previous=[])
    return ImpactAnalysis(app.task_store, R).impact(f"{R}/base:1").to_dict()


def test_the_tree_nests_each_level_under_the_image_that_reaches_it(impact):
    assert impact_tree(impact).splitlines() == [
        f"{R}/base:1",
        f"├── mid (level 1, runtime) → {R}/mid:1",
        "│   └── app (level 2, runtime)",
        "├── off (level 1, runtime, trigger off, not rebuilt: the task's base image trigger is disabled)",
        "└── tools (level 1, build stage, not rebuilt: a build-stage base, and the trigger type is Runtime)",
        "2 task(s) would rebuild in 2 level(s); 2 dependent(s) would not",
    ]


def test_an_empty_impact_says_so():
    assert "no task would rebuild" in impact_tree({"image": f"{R}/x:1", "levels": [], "edges": []})


def test_dot_draws_produced_images_as_labelled_edges_and_marks_what_does_not_rebuild(impact):
    dot = impact_dot(impact)
    assert dot.startswith("digraph impact {") and dot.endswith("}")
    assert f'"task:mid" -> "task:app" [label="{R}/mid:1"];' in dot
    assert f'"image:{R}/base:1" -> "task:tools" [style=dashed];' in dot
    assert '"task:off" [label="off\\nlevel 1\\ntrigger off", style="rounded,dashed"];' in dot


def test_mermaid_is_a_flowchart_with_dashed_build_stage_edges(impact):
    lines = impact_mermaid(impact).splitlines()
    assert lines[0] == "flowchart LR" and f'  root(["{R}/base:1"])' in lines
    assert any(line.startswith("  root -.->") and "build stage" in line for line in lines)
    assert lines[-1].startswith("  class ") and lines[-1].endswith(" off")


def test_tables_of_decisions_verdicts_and_stale_entries():
    digest = "sha256:" + "ab" * 32
    text = decisions_table([{"time": "2026-11-27T10:00:00.5Z", "image": f"{R}/b:1", "digest": digest,
                             "outcome": "queued", "runs": ["da1", "da2"], "reason": "2 dependent task(s)"}])
    assert text.splitlines()[2].split() == ["2026-11-27T10:00:00Z", f"{R}/b:1", "abababababab", "queued",
                                           "da1,da2", "2", "dependent", "task(s)"]
    why = why_table([{"time": "2026-11-27T10:00:00Z", "event_id": "e1", "image": f"{R}/b:1", "digest": digest,
                      "outcome": "queued", "reason": "base changed", "run_id": "da1", "run_status": "Failed",
                      "run_reason": "exit status 1"}])
    assert "da1 (Failed)" in why and "base changed; run: exit status 1" in why
    rebased = why_table([{"time": "2026-11-27T10:00:00Z", "event_id": "e2", "image": f"{R}/b:1",
                          "digest": digest, "outcome": "queued", "reason": "base changed", "run_id": "da2",
                          "run_status": "Succeeded", "update_decision": "rebuilt: base ENV changed"}])
    assert "base changed; rebuilt: base ENV changed" in rebased
    stale = stale_table([{"task": "t", "base": f"{R}/b:1", "runtime": False, "state": "stale",
                          "since": None, "built_digest": digest, "current_digest": None, "cause": "no-event",
                          "reason": "r"}])
    assert "(build stage)" in stale and "unknown" in stale


def test_an_invalid_image_is_one_clear_line_before_any_request(capsys):
    assert main(["base", "impact", "Not/Valid", "--url", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: invalid image reference 'Not/Valid'") and "\n" not in err
