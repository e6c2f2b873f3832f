"""A task's base change policy on the stack: real bases pushed to the registry, the host's worker
judging the change it classified (shared.service_layer.change_policy)."""

from __future__ import annotations

import os
import uuid

from shared.domain.tasks import Task
from shared.domain.vocabulary import BaseChangePolicy, Outcome, RunStatus, WaveState
from tests.integration.buildah_tools import buildah
from tests.integration.test_base_changes import (
    DEBIAN_12,
    DEBIAN_13,
    DPKG_V1,
    DPKG_V2,
    build_base,
    push_index,
    recommit,
)
from tests.integration.test_pipeline import wait_for_decision, wait_for_run


def make_task(stack, tmp_path, name: str, base: str, policy: BaseChangePolicy,
              platform: str = "linux") -> Task:
    context = tmp_path / name
    context.mkdir()
    (context / "Dockerfile").write_text("ARG BASE\nFROM ${BASE}\nCOPY hello /hello\n")
    (context / "hello").write_text("hello\n")
    return stack.tasks.create(Task(name=name, images=[f"{name}/app:{{{{.Run.ID}}}}"], context=str(context),
                                   build_args={"BASE": base}, base_change_policy=policy,
                                   platform=platform))


def test_skip_identical_content_ends_the_run_unbuilt_and_decides_why(stack, tmp_path):
    name = f"cp{uuid.uuid4().hex[:8]}"
    base = f"{os.environ['REGISTRY']}/{name}/base:1"
    try:
        build_base(tmp_path, base, {"/var/lib/dpkg/status": DPKG_V1, "/etc/os-release": DEBIAN_12})
        task = make_task(stack, tmp_path, f"{name}-app", base, BaseChangePolicy.SKIP_IDENTICAL)
        assert stack.tasks.get(task.name).base_change_policy == BaseChangePolicy.SKIP_IDENTICAL  # stored
        recommitted = recommit(tmp_path, base)  # a new digest, the same content (timestamps only)
        run = wait_for_run(stack, task.name)
        assert run.status == RunStatus.CANCELED, run.reason
        assert run.reason == "not built: identical content (base change policy skip-identical)"
        assert run.cause == f"{base}@{recommitted}" and run.output_digest is None
        log = stack.logs.read(run.run_id).decode()
        assert "base change policy skip-identical: not built: identical content" in log
        decisions = [d for d in stack.decisions.recent(top=50, image=base) if d.runs == [run.run_id]]
        assert [d.outcome for d in decisions if d.outcome == Outcome.IDENTICAL_CONTENT] == [
            Outcome.IDENTICAL_CONTENT], decisions
        # The task is on what was pushed (its image would be the same): not stale.
        assert [d.digest for d in stack.tasks.get(task.name).dependencies] == [recommitted]
        entries, _ = stack.staleness.report()
        assert [(e.task, e.cause) for e in entries if e.task == task.name] == []
    finally:
        buildah("rmi", "-f", base)


def test_hold_os_release_holds_the_wave_until_resume_and_then_builds(stack, tmp_path):
    name = f"cp{uuid.uuid4().hex[:8]}"
    base = f"{os.environ['REGISTRY']}/{name}/base:1"
    try:
        build_base(tmp_path, base, {"/var/lib/dpkg/status": DPKG_V1, "/etc/os-release": DEBIAN_12})
        task = make_task(stack, tmp_path, f"{name}-app", base, BaseChangePolicy.HOLD_OS_RELEASE)
        trixie = build_base(tmp_path, base, {"/var/lib/dpkg/status": DPKG_V1, "/etc/os-release": DEBIAN_13})
        held = wait_for_decision(stack, base, trixie, Outcome.HELD, timeout=120)
        assert "os release changed" in held.reason and "wave resume" in held.reason, held.reason
        (run_id,) = held.runs
        run, _ = stack.runs.get(run_id)
        assert run.status == RunStatus.HELD and run.cause == f"{base}@{trixie}" and run.wave_id
        wave, _ = stack.waves.waves.get(run.wave_id)
        assert wave.state == WaveState.HELD

        stack.waves.resume(wave.wave_id)  # the approval
        built = wait_for_run(stack, task.name)
        assert built.run_id == run_id and built.status == RunStatus.SUCCEEDED, built.reason
        log = stack.logs.read(run_id).decode()
        assert "approved by `wave resume`" in log
    finally:
        buildah("rmi", "-f", base)


def test_the_policy_is_set_by_the_cli_shown_changed_and_checked(stack, tmp_path, capsys):
    import json

    import requests

    from cli.main import main

    def cli(*args: str) -> int:
        return main([*args, "--url", os.environ["BASETRIGGER_URL"], "--key", os.environ["BASETRIGGER_KEY"]])

    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY Dockerfile /\n")
    name = f"cp{uuid.uuid4().hex[:8]}"
    url, key = os.environ["BASETRIGGER_URL"], os.environ["BASETRIGGER_KEY"]
    bad = requests.post(f"{url}/api/tasks", headers={"x-functions-key": key}, timeout=30,
                        json={"name": name, "images": ["x:1"], "context": str(tmp_path),
                              "base_change_policy": "sometimes"})
    assert bad.status_code == 400
    assert bad.json()["error"]["message"] == (
        "base_change_policy must be any or skip-identical or hold-os-release")
    assert cli("task", "create", "--name", name, "--image", "x:1", "--context", str(tmp_path),
               "--base-change-policy", "skip-identical", "--output", "json") == 0
    assert json.loads(capsys.readouterr().out)["base_change_policy"] == "skip-identical"
    assert cli("task", "update", "--name", name, "--base-change-policy", "hold-os-release") == 0
    capsys.readouterr()
    assert cli("task", "show", "--name", name, "--output", "json") == 0
    assert json.loads(capsys.readouterr().out)["base_change_policy"] == "hold-os-release"
    assert cli("task", "update", "--name", name, "--base-change-policy", "never") == 2  # argparse: usage
    assert "expected one of any, skip-identical, hold-os-release" in capsys.readouterr().err
    assert cli("task", "delete", "--name", name, "--yes") == 0


def test_base_settling_lists_and_dispatches_through_the_host(stack, capsys):
    from cli.main import main

    def cli(*args: str) -> int:
        return main([*args, "--url", os.environ["BASETRIGGER_URL"], "--key", os.environ["BASETRIGGER_KEY"]])

    # The stack's host has no settle window (BASETRIGGER_SETTLE_SECONDS unset): nothing settles.
    assert cli("base", "settling") == 0
    assert "BASE" in capsys.readouterr().out
    assert cli("base", "settling", "--now") == 0
    assert "no base has been still for its window yet" in capsys.readouterr().out


def test_hold_os_release_judges_each_tasks_own_platform_of_a_multi_platform_base(stack, tmp_path):
    name = f"cp{uuid.uuid4().hex[:8]}"
    base = f"{os.environ['REGISTRY']}/{name}/base:1"
    amd64, arm64 = base.replace(":1", ":amd64"), base.replace(":1", ":arm64")
    bookworm = {"/var/lib/dpkg/status": DPKG_V1, "/etc/os-release": DEBIAN_12}
    try:
        build_base(tmp_path, amd64, bookworm)
        build_base(tmp_path, arm64, bookworm, platform="linux/arm64")
        push_index(tmp_path, base, [amd64, arm64])
        on_amd64 = make_task(stack, tmp_path, f"{name}-amd", base, BaseChangePolicy.HOLD_OS_RELEASE)
        on_arm64 = make_task(stack, tmp_path, f"{name}-arm", base, BaseChangePolicy.HOLD_OS_RELEASE,
                             platform="linux/arm64")
        # amd64: a package upgraded; arm64: a new OS release. Only the arm64 task waits for approval.
        build_base(tmp_path, amd64, {**bookworm, "/var/lib/dpkg/status": DPKG_V2})
        build_base(tmp_path, arm64, {**bookworm, "/etc/os-release": DEBIAN_13}, platform="linux/arm64")
        after = push_index(tmp_path, base, [amd64, arm64])
        held = wait_for_decision(stack, base, after, Outcome.HELD, timeout=120)
        assert held.tasks[0].task == on_arm64.name and "platform linux/arm64" in held.reason, held.reason
        built = wait_for_run(stack, on_amd64.name)
        assert built.status == RunStatus.SUCCEEDED, built.reason
        log = stack.logs.read(built.run_id).decode()
        assert "built: packages (base change policy hold-os-release, platform linux/amd64)" in log, log
        (waiting,) = stack.runs.newest(task=on_arm64.name, top=1)[0]
        assert waiting.status == RunStatus.HELD and waiting.run_id in held.runs
        wave, _ = stack.waves.waves.get(waiting.wave_id or "")
        assert {p: n.classification for p, n in wave.platform_changes.items()} == {
            "linux/amd64": "packages", "linux/arm64": "os release changed"}
        stack.waves.cancel(wave.wave_id)  # the arm64 build is never approved (nothing runs arm64 here)
    finally:
        buildah("rmi", "-f", amd64, arm64)
