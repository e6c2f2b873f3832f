"""A task's base change policy on fakes: skip `identical content` (decided, not built), hold
`os release changed` until `wave resume` (then built once), everything else built; the wave's
change line is what the worker judges (shared.domain.change_policy)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from shared.domain.base_changes import ChangeKind
from shared.domain.change_policy import Action, classification, judge
from shared.domain.events import ImagePushed
from shared.domain.tasks import TaskError
from shared.domain.vocabulary import BaseChangePolicy, EventSource, Outcome, RunStatus, WaveState
from shared.domain.waves import PlatformNote
from shared.service_layer.staleness import StalenessReport
from tests.fakes import FakeApp
from tests.unit.test_waves import DIGEST, REGISTRY, add_task, play, push, ref


class NotedChange:
    """The wave's change as WaveChanges.note gives it (computed on the stack's registry elsewhere)."""

    def __init__(self, line: str | None):
        self.line = line

    def note(self, wave_id: str) -> str | None:
        return self.line


def app_with(tmp_path, change: str | None, policy: BaseChangePolicy) -> FakeApp:
    app = FakeApp(tmp_path, REGISTRY)
    app.worker.changes = NotedChange(change)  # type: ignore[assignment]
    add_task(app, "app", ["base"], output="app:latest")
    add_task(app, "web", ["app"])  # built on app's output: not judged by the policy itself
    task = app.task_store.get("app")
    task.base_change_policy = policy
    app.task_store.save(task)
    return app


def test_skip_identical_content_builds_nothing_and_the_decision_says_why(tmp_path):
    app = app_with(tmp_path, "identical content (linux/amd64)", BaseChangePolicy.SKIP_IDENTICAL)
    decision = push(app, "base")
    assert play(app) == ["app"]  # web is never sent: its base did not change
    (run,) = [app.runs.get(r)[0] for r in decision.runs if app.runs.get(r)[0].task == "app"]
    assert run.status == RunStatus.CANCELED
    assert run.reason == "not built: identical content (base change policy skip-identical)"
    assert app.builder.requests == []
    (skipped,) = [d for d in app.decisions.decisions if d.outcome == Outcome.IDENTICAL_CONTENT]
    assert skipped.runs == [run.run_id] and skipped.tasks[0].task == "app"
    assert "identical content" in skipped.reason
    log = app.logs.read(run.run_id).decode()
    assert "base change policy skip-identical: not built: identical content" in log
    app.worker.execute(run.run_id)  # a redelivery of its message: nothing more is decided
    assert len([d for d in app.decisions.decisions if d.outcome == Outcome.IDENTICAL_CONTENT]) == 1


@pytest.mark.parametrize("policy", list(BaseChangePolicy))
def test_a_package_change_is_built_whatever_the_policy(tmp_path, policy):
    app = app_with(tmp_path, "packages (linux/amd64: upgraded bash 5.2.15-2 -> 5.2.21-1)", policy)
    push(app, "base")
    assert play(app) == ["app", "web"]


def test_an_unknown_change_is_built_never_skipped(tmp_path):
    app = app_with(tmp_path, "unknown (the deadline passed)", BaseChangePolicy.SKIP_IDENTICAL)
    push(app, "base")
    assert play(app) == ["app", "web"]


def test_hold_os_release_holds_the_wave_until_resume_then_builds_once(tmp_path):
    app = app_with(tmp_path, "os release changed (linux/amd64: os Debian 12 -> Debian 13)",
                   BaseChangePolicy.HOLD_OS_RELEASE)
    decision = push(app, "base")
    play(app)
    run_id = next(r for r in decision.runs if app.runs.get(r)[0].task == "app")
    run, _ = app.runs.get(run_id)
    assert run.status == RunStatus.HELD and not run.released
    assert app.builder.requests == []  # held before anything was built
    wave, _ = app.wave_store.get(run.wave_id)
    assert wave.state == WaveState.HELD and "os release changed" in (wave.reason or "")
    assert f"wave resume {wave.wave_id}" in (wave.reason or "")
    (held,) = [d for d in app.decisions.decisions if d.outcome == Outcome.HELD]
    assert held.tasks[0].task == "app" and "base change policy hold-os-release" in held.reason
    assert app.slots.holders("global") == [] and app.slots.holders(wave.wave_id) == []  # places back

    app.waves.resume(wave.wave_id)  # the approval
    play(app)
    assert [r.run_id for r in app.builder.requests] == [run_id, app.runs.newest(task="web")[0][0].run_id]
    run, _ = app.runs.get(run_id)
    assert run.status == RunStatus.SUCCEEDED
    assert "approved by `wave resume`" in app.logs.read(run_id).decode()
    assert app.wave_store.get(wave.wave_id)[0].state == WaveState.DONE


def test_the_policy_is_checked_and_defaults_to_any():
    from shared.domain.tasks import Task

    task = Task(name="t", images=["t:1"], context="/ctx")
    task.validate()
    assert task.base_change_policy == BaseChangePolicy.ANY
    task.base_change_policy = "skip-everything"  # type: ignore[assignment]
    with pytest.raises(TaskError, match="base change policy must be any or skip-identical or hold"):
        task.validate()


def test_classification_reads_the_line_and_judge_never_acts_on_a_guess():
    assert classification("os release changed (linux/amd64: os a -> b)") == ChangeKind.OS_RELEASE
    assert classification("packages") == ChangeKind.PACKAGES
    assert classification("unknown (no earlier digest is known)") is None
    assert classification(None) is None
    assert judge(BaseChangePolicy.HOLD_OS_RELEASE, None).action == Action.BUILD
    assert judge(BaseChangePolicy.ANY, "identical content").action == Action.BUILD
    assert judge(BaseChangePolicy.HOLD_OS_RELEASE, "os release changed", approved=True).action == Action.BUILD


class NotedPerPlatform(NotedChange):
    """WaveChanges.note on a two-platform base: the line, and each platform's change on the wave."""

    def __init__(self, app: FakeApp, line: str, notes: dict[str, PlatformNote]):
        super().__init__(line)
        self.app, self.notes = app, notes

    def note(self, wave_id: str) -> str | None:
        wave, etag = self.app.wave_store.get(wave_id)
        if not wave.platform_changes:
            self.app.wave_store.save(replace(wave, base_change=self.line, platform_changes=self.notes), etag)
        return self.line


def test_hold_os_release_judges_the_tasks_own_platform_not_the_whole_base(tmp_path):
    app = FakeApp(tmp_path, REGISTRY)
    app.worker.changes = NotedPerPlatform(  # type: ignore[assignment]
        app, "os release changed (linux/amd64: identical content; "
             "linux/arm64: os release changed (os Debian 12 -> Debian 13))",
        {"linux/amd64": PlatformNote("identical content", "sha256:" + "a" * 64),
         "linux/arm64": PlatformNote("os release changed", "sha256:" + "b" * 64)})
    for name, platform in (("amd", "linux/amd64"), ("arm", "linux/arm64")):
        add_task(app, name, ["base"], output=f"{name}:latest")
        task = app.task_store.get(name)
        task.base_change_policy, task.platform = BaseChangePolicy.HOLD_OS_RELEASE, platform
        app.task_store.save(task)
        app.index.sync_task(task, previous=task.dependencies)  # its runs build its platform
    decision = push(app, "base")
    play(app)
    runs = {run.task: run for run in (app.runs.get(r)[0] for r in decision.runs)}
    # Only arm64's OS release changed: the amd64 task builds, the arm64 one waits for approval.
    assert [r.run_id for r in app.builder.requests] == [runs["amd"].run_id]
    assert runs["amd"].status == RunStatus.SUCCEEDED
    assert runs["arm"].status == RunStatus.HELD
    assert ("built: identical content (base change policy hold-os-release, platform linux/amd64)"
            in app.logs.read(runs["amd"].run_id).decode())
    (held,) = [d for d in app.decisions.decisions if d.outcome == Outcome.HELD]
    assert held.tasks[0].task == "arm" and "platform linux/arm64" in held.reason


def test_a_task_skipped_for_identical_content_is_on_the_new_digest_not_stale(tmp_path):
    app = app_with(tmp_path, "identical content (linux/amd64)", BaseChangePolicy.SKIP_IDENTICAL)
    decision = push(app, "base")
    play(app)
    (run,) = [app.runs.get(r)[0] for r in decision.runs if app.runs.get(r)[0].task == "app"]
    assert run.status == RunStatus.CANCELED
    # The task is on what was pushed: its dependency, its index row and staleness agree.
    assert [d.digest for d in app.task_store.get("app").dependencies] == [DIGEST]
    (row,) = [r for r in app.index.dependents(ref("base")) if r.task == "app"]
    assert row.built_digest == DIGEST
    app.registry.digests = {ref("base"): DIGEST}
    entries, _ = StalenessReport(app.task_store, app.runs, app.decisions, app.registry,
                                 app.wave_store).report()
    assert [(e.task, e.base) for e in entries if e.task == "app"] == []
    # A later delivery of the same push (another event id) finds nothing to do for it.
    again = app.dispatcher.handle(ImagePushed("push-again", REGISTRY, "base", "latest", DIGEST,
                                              datetime.now(UTC), EventSource.DISTRIBUTION))
    assert [t.outcome for t in again.tasks if t.task == "app"] == [Outcome.DIGEST_UNCHANGED]


def test_a_run_that_joined_from_another_tag_of_the_push_is_judged_too(tmp_path):
    from tests.unit.test_waves import add_on_tags, push_tag

    app = FakeApp(tmp_path, REGISTRY)
    app.worker.changes = NotedChange("identical content (linux/amd64)")  # type: ignore[assignment]
    add_on_tags(app, "on-12", ["1.2"])
    add_on_tags(app, "on-latest", ["latest"])
    task = app.task_store.get("on-latest")
    task.base_change_policy = BaseChangePolicy.SKIP_IDENTICAL
    app.task_store.save(task)
    push_tag(app, "1.2", "push-1.2")
    second = push_tag(app, "latest", "push-latest")  # joins the 1.2 push's wave
    play(app)
    (run_id,) = second.runs
    run, _ = app.runs.get(run_id)
    assert run.status == RunStatus.CANCELED and "identical content" in (run.reason or "")
    assert [r.task for r in (app.runs.get(x.run_id)[0] for x in app.builder.requests)] == ["on-12"]
