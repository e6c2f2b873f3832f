"""The build process belongs to the worker that started it: it dies with it, and it never pushes
for a run another attempt has taken over. Real buildah, real registry."""

from __future__ import annotations

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
from tests.integration.buildah_tools import push_base

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
