"""The tutorial (docs/tutorial.md) end to end, through the CLI, against the local stack (`make demo`).

Needs the stack's settings in the environment (`make test` exports them): BASETRIGGER_URL,
BASETRIGGER_KEY, REGISTRY (and REGISTRY_CERT_DIR to read images back). Everything it creates has
a unique name: the task `e2e-<id>-helloworld`, and images under `<registry>/e2e<id>/...` (the base
is `e2e<id>/baseimages/node:9-alpine`, reached by the unchanged Dockerfile-app through
`--arg REGISTRY_NAME=<registry>/e2e<id>`), so it never meets other tests' tasks or images.

The flow runs once (module fixture); the tests below check what each step left behind.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cli.main import main
from cli.output import RUN_COLUMNS

PROJECT = Path(__file__).resolve().parents[2]
EXAMPLE = PROJECT / "examples" / "helloworld"
BUSYBOX = Path("/bin/busybox")
AUTO_RUN_TIMEOUT = 300.0
TERMINAL = {"Succeeded", "Failed", "Canceled", "Error", "Timeout"}


def cli(*args: str) -> tuple[int, str, str]:
    """`basetrigger ARGS` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def cli_ok(*args: str) -> str:
    code, out, err = cli(*args)
    assert code == 0, f"basetrigger {' '.join(args)} exited with {code}:\n{err}\n{out[-3000:]}"
    return out


def cli_json(*args: str):
    return json.loads(cli_ok(*args, "--output", "json"))


def buildah(*args: str) -> str:
    result = subprocess.run(["buildah", "--storage-driver", "vfs", *args], capture_output=True, text=True)
    assert result.returncode == 0, f"buildah {' '.join(args[:2])} failed:\n{result.stderr}"
    return result.stdout


def parse_table(text: str) -> tuple[list[str], list[list[str]]]:
    """Split an az-style table by the spans of its dashed rule."""
    header, rule, *rows = text.rstrip("\n").splitlines()
    spans = [m.span() for m in re.finditer(r"-+", rule)]
    assert rule == "  ".join("-" * (end - start) for start, end in spans), f"not a dashed rule: {rule!r}"

    def cells(line: str) -> list[str]:
        last = len(spans) - 1
        return [line[start : end if i < last else None].strip() for i, (start, end) in enumerate(spans)]

    return cells(header), [cells(row) for row in rows]


@dataclass
class Flow:
    uid: str
    task: str
    registry_name: str
    base: str
    context: Path
    build_outputs: list[str] = field(default_factory=list)
    created: dict = field(default_factory=dict)
    manual_run: dict = field(default_factory=dict)
    run_output: str = ""
    auto_run: dict = field(default_factory=dict)
    table: str = ""
    logs_by_name: str = ""


@pytest.fixture(scope="module")
def stack_env() -> dict[str, str]:
    missing = [name for name in ("BASETRIGGER_URL", "BASETRIGGER_KEY", "REGISTRY")
               if not os.environ.get(name)]
    if missing:
        pytest.fail(f"{', '.join(missing)} not set: run the end-to-end tests with `make test`, which starts "
                    'the stack and exports its settings (or eval "$(python3 scripts/stack.py env)")')
    if not BUSYBOX.is_file():
        pytest.fail(f"{BUSYBOX} is missing: install busybox-static (`make install`)")
    return dict(os.environ)


@pytest.fixture(scope="module")
def flow(stack_env, tmp_path_factory) -> Flow:
    uid = uuid.uuid4().hex[:8]
    registry = stack_env["REGISTRY"]
    context = tmp_path_factory.mktemp("tutorial") / "helloworld"
    shutil.copytree(EXAMPLE, context, ignore=shutil.ignore_patterns("busybox"))
    shutil.copy2(BUSYBOX, context / "busybox")
    f = Flow(uid=uid, task=f"e2e-{uid}-helloworld", registry_name=f"{registry}/e2e{uid}",
             base=f"e2e{uid}/baseimages/node:9-alpine", context=context)
    build_base = ("build", "--image", f.base, "--file", "Dockerfile-base", str(context))

    # 1. quick build of the base
    f.build_outputs.append(cli_ok(*build_base))
    try:
        # 2. the task, 3. its first (manual) run
        f.created = cli_json("task", "create", "--name", f.task,
                             "--image", f"e2e{uid}/helloworld:{{{{.Run.ID}}}}",
                             "--arg", f"REGISTRY_NAME={f.registry_name}", "--context", str(context),
                             "--file", "Dockerfile-app")
        f.run_output = cli_ok("task", "run", "--name", f.task)
        f.manual_run = cli_json("task", "list-runs", "--name", f.task, "--top", "1")[0]
        known = {f.manual_run["run_id"]}

        # 6. the framework patch, built with the same command
        dockerfile = context / "Dockerfile-base"
        dockerfile.write_text(dockerfile.read_text().replace("ENV NODE_VERSION 9.11.2\n",
                                                             "ENV NODE_VERSION 9.11.2a\n"))
        assert "9.11.2a" in dockerfile.read_text()
        f.build_outputs.append(cli_ok(*build_base))

        # 7. the automatic run
        deadline = time.monotonic() + AUTO_RUN_TIMEOUT
        while True:
            runs = cli_json("task", "list-runs", "--name", f.task, "--top", "10")
            new = [r for r in runs if r["run_id"] not in known]
            if new and all(r["status"] in TERMINAL for r in new):
                f.auto_run = new[-1]
                break
            if time.monotonic() > deadline:
                table = cli_ok("task", "list-runs", "--name", f.task, "--output", "table")
                pytest.fail(f"no automatic run of {f.task} ended within {AUTO_RUN_TIMEOUT:.0f}s:\n{table}")
            time.sleep(1)
        f.table = cli_ok("task", "list-runs", "--name", f.task, "--output", "table")
        f.logs_by_name = cli_ok("task", "logs", "--name", f.task)
        yield f
    finally:
        cli("task", "delete", "--name", f.task, "--yes")


def test_quick_builds_succeed_and_stream_their_log(flow):
    for output in flow.build_outputs:
        assert "STEP 4/4: ENV NODE_VERSION" in output
        assert re.search(r"^Run ID: \S+ was successful after \d\d:\d\d:\d\d$", output, re.M)


def test_task_knows_its_base_image_and_hides_nothing_secret(flow):
    assert flow.created["name"] == flow.task
    assert flow.created["build_args"] == {"REGISTRY_NAME": flow.registry_name}
    assert flow.created["context"] == str(flow.context)
    base = f"{flow.registry_name}/baseimages/node:9-alpine"
    assert [d["image"] for d in flow.created["dependencies"]] == [base]


def test_manual_run_succeeded(flow):
    run = flow.manual_run
    assert (run["status"], run["trigger"], run["task"]) == ("Succeeded", "Manual", flow.task), run
    assert f"Run ID: {run['run_id']} was successful" in flow.run_output
    assert run["output_images"] == [f"{flow.registry_name}/helloworld:{run['run_id']}"]


def test_automatic_run_is_an_image_update_that_succeeded(flow):
    run = flow.auto_run
    assert run["trigger"] == "Image Update", run
    assert run["status"] == "Succeeded", run
    assert run["task"] == flow.task
    assert run["output_images"] == [f"{flow.registry_name}/helloworld:{run['run_id']}"]


def test_list_runs_table_has_az_columns_newest_first(flow):
    headers, rows = parse_table(flow.table)
    assert headers == list(RUN_COLUMNS)
    assert [row[0] for row in rows[:2]] == [flow.auto_run["run_id"], flow.manual_run["run_id"]]
    for row, trigger in zip(rows[:2], ("Image Update", "Manual"), strict=True):
        run_id, task, platform, status, trig, started, duration = row
        assert (task, platform, status, trig) == (flow.task, "Linux", "Succeeded", trigger)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", started), started
        assert re.fullmatch(r"\d\d:\d\d:\d\d", duration), duration


def test_logs_by_task_name_show_the_newest_run(flow):
    assert f"run {flow.auto_run['run_id']}" in flow.logs_by_name
    assert "Image Update" in flow.logs_by_name


def test_show_run_and_cancel_of_a_finished_run(flow):
    run = cli_json("task", "show-run", "--run-id", flow.auto_run["run_id"])
    assert run["run_id"] == flow.auto_run["run_id"] and run["status"] == "Succeeded"
    code, _, err = cli("task", "cancel-run", "--run-id", flow.auto_run["run_id"])
    assert code != 0 and err.startswith("error: ") and len(err.strip().splitlines()) == 1


def test_rebuilt_app_image_has_the_patched_node_version(flow):
    image = flow.auto_run["output_images"][0]
    cert_dir = os.environ.get("REGISTRY_CERT_DIR")
    tls = ["--cert-dir", cert_dir] if cert_dir else []
    container = buildah("from", *tls, "--pull-always", "--quiet", f"docker://{image}").strip()
    try:
        env = buildah("inspect", "--format", "{{.OCIv1.Config.Env}}", container)
        assert "NODE_VERSION=9.11.2a" in env, env
        page = buildah("run", "--isolation", "chroot", container, "--", "/bin/sh", "/app/start.sh",
                       "--render-only")
        assert "<p>Node version: 9.11.2a</p>" in page, page
    finally:
        subprocess.run(["buildah", "--storage-driver", "vfs", "rm", container], capture_output=True)


def test_unknown_task_is_one_clear_error(stack_env):
    code, out, err = cli("task", "run", "--name", f"e2e-missing-{uuid.uuid4().hex[:6]}")
    assert code != 0 and out == ""
    assert err.startswith("error: ") and "not found" in err and len(err.strip().splitlines()) == 1
