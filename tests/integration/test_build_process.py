"""The build process belongs to the worker that started it: it dies with it, and it never pushes
for a run another attempt has taken over. Real buildah, real registry."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

from shared.adapters.builders.buildah import BuildahBuilder
from shared.adapters.registry import RegistryClient
from shared.domain.builds import BuildContext, BuildRequest
from shared.domain.vocabulary import RunStatus
from tests.integration.buildah_tools import buildah, push_base

ROOT = Path(__file__).resolve().parents[2]


def builder() -> BuildahBuilder:
    return BuildahBuilder(RegistryClient(ca_file=os.environ.get("BASETRIGGER_REGISTRY_CA")),
                          ca_file=os.environ.get("BASETRIGGER_REGISTRY_CA"),
                          work_dir=os.environ.get("BASETRIGGER_WORK_DIR", "/tmp/basetrigger-tests"))


def context(tmp_path: Path, base: str, step: str) -> Path:
    folder = tmp_path / "ctx"
    folder.mkdir()
    (folder / "Dockerfile").write_text(f"FROM {base}\nRUN {step}\n")
    return folder


def sleeping_buildahs(marker: str) -> list[int]:
    """Pids of buildah processes building the context named by `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if cmdline.startswith("buildah") and marker in cmdline:
                found.append(int(entry.name))
    return found


def wait_for(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"gave up waiting for {what}")


def test_a_build_dies_with_the_worker_that_started_it_even_by_sigkill(tmp_path):
    registry = os.environ["REGISTRY"]
    name = f"orphan{uuid.uuid4().hex[:8]}"
    base = f"{registry}/{name}/base:1"
    push_base(tmp_path, base, "o1")
    folder = context(tmp_path, base, "sleep 90")
    worker = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from tests.integration.test_build_process import builder
        from shared.domain.builds import BuildContext, BuildRequest
        builder().build(BuildRequest(run_id="da0", context=BuildContext(path={str(folder)!r}),
                                     dockerfile="Dockerfile", images=[{f"{registry}/{name}/app:1"!r}]),
                        print)
    """)], env=os.environ.copy())
    try:
        pids = wait_for(lambda: sleeping_buildahs(str(folder)), 60, "buildah to start")
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        wait_for(lambda: not sleeping_buildahs(str(folder)), 30, f"buildah {pids} to die with its worker")
    finally:
        worker.kill()


def test_a_build_taken_over_before_its_push_never_pushes(tmp_path):
    registry = os.environ["REGISTRY"]
    name = f"takeover{uuid.uuid4().hex[:8]}"
    base = f"{registry}/{name}/base:1"
    push_base(tmp_path, base, "t1")
    image = f"{registry}/{name}/app:1"
    request = BuildRequest(run_id="da0", context=BuildContext(path=str(context(tmp_path, base, "true"))),
                           dockerfile="Dockerfile", images=[image], still_ours=lambda: False)
    lines: list[str] = []
    result = builder().build(request, lines.append)
    assert result.status == RunStatus.CANCELED and "taken over" in (result.reason or "")
    assert RegistryClient(ca_file=os.environ.get("BASETRIGGER_REGISTRY_CA")).resolve_digest(image) is None
    assert shutil.which("buildah")
    assert not any(line.startswith("$ buildah push") for line in lines)


def _start_ticks(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def descendants(root: int) -> dict[int, str | None]:
    """Every process below `root`, with its start time (to tell it from a later one with its pid)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = {}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found[child] = _start_ticks(child)
            todo.append(child)
    return found


def working_containers(base: str) -> list[str]:
    """Ids of the buildah working containers made from `base` (unique to a test)."""
    listed = json.loads(buildah("containers", "--json") or "null") or []
    return [c["id"] for c in listed if c.get("imagename") == base]


def start_up_cleanup() -> str:
    """A new process that builds: it removes what dead builds left, once, when its builder is made.
    Its output (warnings, if any), to explain a failure."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from tests.integration.test_build_process import builder
        builder()
    """)], env=os.environ.copy(), check=True, timeout=300, capture_output=True, text=True)
    return done.stdout + done.stderr


def test_a_worker_killed_mid_build_leaves_no_process_and_no_working_container(tmp_path):
    registry = os.environ["REGISTRY"]
    name = f"leftover{uuid.uuid4().hex[:8]}"
    base = f"{registry}/{name}/base:1"
    push_base(tmp_path, base, "l1")
    step = f"step-{uuid.uuid4().hex}"
    folder = context(tmp_path, base, f"sleep 300 && echo {step}")
    # A container of the same base made by someone else (no build of ours), whose maker has exited.
    foreign = buildah("inspect", "--format", "{{.ContainerID}}", buildah("from", base).strip()).strip()
    worker = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from tests.integration.test_build_process import builder
        from shared.domain.builds import BuildContext, BuildRequest
        builder().build(BuildRequest(run_id="da0", context=BuildContext(path={str(folder)!r}),
                                     dockerfile="Dockerfile", images=[{f"{registry}/{name}/app:1"!r}]),
                        print)
    """)], env=os.environ.copy())
    tree: dict[int, str | None] = {}
    try:
        wait_for(lambda: any(step in cmd for cmd in running_cmdlines()), 120, "the RUN step to start")
        tree = descendants(worker.pid)
        ours = [c for c in working_containers(base) if c != foreign]
        assert len(ours) == 1, ours
        start_up_cleanup()  # its owner is alive: the build's container stays
        assert ours[0] in working_containers(base)

        worker.send_signal(signal.SIGKILL)
        worker.wait()
        survivors = lambda: [pid for pid, start in tree.items() if start and _start_ticks(pid) == start]  # noqa: E731
        wait_for(lambda: not survivors(), 30, f"the build's processes {survivors()} to die with their worker")
        # Not checked here that the container is still there: any process of this code that starts
        # building meanwhile (a host, another session) may rightly remove it first.
        said = start_up_cleanup()
        assert working_containers(base) == [foreign], said
    finally:
        worker.kill()
        for pid, start in tree.items():  # only the processes of this test's own build
            if start and _start_ticks(pid) == start:
                os.kill(pid, signal.SIGKILL)
        for container in working_containers(base):
            buildah("rm", container)


def running_cmdlines() -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace"))
            except OSError:
                continue
    return found
