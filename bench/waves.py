"""Wave benchmarks on the local stack (its Azurite, registry, host and buildah), each next to its floor.

1. End-to-end overhead for one dependent: a base push -> its dependent's run Succeeded, against raw
   `buildah bud` + `buildah push` of the same Dockerfile; with where the time goes (notification and
   dispatch, waiting for a worker, the build as the worker runs it), up to the run recorded Succeeded.
2. A three-level wave (1 base -> MID mid -> APP app, tiny images): wall time from the base push to
   the last run finished, against raw bud+push of the critical path at the wave's concurrency
   (ceil(MID/cap) rounds of mid builds, then ceil(APP/cap) rounds of app builds, each round at the
   measured wall time of `cap` raw bud+push side by side).

    make up && eval "$(python3 scripts/stack.py env)" && python bench/waves.py [--mid 20 --app 200]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared import config  # noqa: E402
from shared.bootstrap import Services  # noqa: E402
from shared.domain.runs import Run  # noqa: E402
from shared.domain.tasks import Task  # noqa: E402
from shared.domain.vocabulary import RunStatus, WaveState  # noqa: E402
from shared.domain.waves import Wave, WaveNotFound  # noqa: E402

T = TypeVar("T")

BUSYBOX = "/bin/busybox"
BASE_DOCKERFILE = ('FROM scratch\nCOPY busybox /bin/busybox\n'
                   'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
                   'RUN echo "{version}" > /etc/base-version\n')


def buildah(*args: str) -> None:
    cert_dir = os.environ.get("REGISTRY_CERT_DIR")
    tls = ["--cert-dir", cert_dir] if cert_dir and args[0] in ("push", "bud") else []
    subprocess.run(["buildah", "--storage-driver", "vfs", args[0], *tls, *args[1:]], check=True,
                   capture_output=True)


def push_base(work: Path, image: str, version: str) -> float:
    folder = work / f"base-{version}"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(BUSYBOX, folder / "busybox")
    (folder / "Dockerfile").write_text(BASE_DOCKERFILE.format(version=version))
    buildah("bud", "--isolation", "chroot", "--layers=false", "-t", image, str(folder))
    buildah("push", image, f"docker://{image}")
    # The base is pushed when its push returns: the registry has the manifest and notifies.
    return time.time()


def raw_build(work: Path, dockerfile: str, image: str) -> float:
    """Seconds of `buildah bud` + `buildah push` of one image, as the worker runs them."""
    folder = work / f"raw-{uuid.uuid4().hex[:6]}"
    folder.mkdir()
    (folder / "Dockerfile").write_text(dockerfile)
    started = time.perf_counter()
    buildah("bud", "--isolation", "chroot", "--pull=true", "-t", image, str(folder))
    buildah("push", image, f"docker://{image}")
    return time.perf_counter() - started


def raw_builds_at_once(work: Path, dockerfile: str, image: str, count: int) -> float:
    """Wall seconds of `count` raw bud+push run side by side, as a wave runs `count` builds at once
    (on a machine with fewer cores than that, they slow each other down: that belongs to the floor)."""
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=count) as pool:
        list(pool.map(lambda n: raw_build(work, dockerfile, f"{image}-{n}"), range(count)))
    return time.perf_counter() - started


def context(work: Path, name: str, dockerfile: str) -> str:
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Dockerfile").write_text(dockerfile)
    return str(folder)


def wait(condition: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise SystemExit(f"gave up waiting for {what}")


def end_to_end(stack: Services, work: Path, registry: str, repeat: int) -> None:
    name = f"e2e{uuid.uuid4().hex[:6]}"
    base = f"{registry}/{name}/base:1"
    dockerfile = f"FROM {base}\nRUN cat /etc/base-version > /app-version\n"
    push_base(work, base, "0")
    stack.tasks.create(Task(name=name, images=[f"{name}/app:{{{{.Run.ID}}}}"],
                            context=context(work, name, dockerfile)))
    totals, raws, parts = [], [], []
    try:
        for n in range(1, repeat + 1):
            known = {r.run_id for r in stack.runs.newest(task=name, top=50)[0]}
            pushed = push_base(work, base, str(n))

            def new_finished_run(known: set[str] = known) -> Run | None:
                return next((r for r in stack.runs.newest(task=name, top=5)[0]
                             if r.run_id not in known and r.finished), None)

            run = wait(new_finished_run, 300, "the run")
            if run.status != RunStatus.SUCCEEDED:
                raise SystemExit(f"run {run.run_id} {run.status}: {run.reason}")
            if run.started_at is None or run.finished_at is None:
                raise SystemExit(f"run {run.run_id} is Succeeded without its start and end times")
            # Until the run is recorded Succeeded (its finished_at), not until this script's poll
            # happens to see it: how often a script polls is not the product's time.
            totals.append(run.finished_at.timestamp() - pushed)
            parts.append((run.created_at.timestamp() - pushed,
                          (run.started_at - run.created_at).total_seconds(),
                          (run.finished_at - run.started_at).total_seconds()))
            raws.append(raw_build(work, dockerfile, f"{registry}/{name}/raw:{n}"))
    finally:
        stack.tasks.delete(name)
    total, raw = statistics.median(totals), statistics.median(raws)
    print(f"1. one dependent, base push -> run Succeeded: {total:.2f} s; raw bud+push {raw:.2f} s; "
          f"ratio {total / raw:.2f}x (target <= 1.3x)  median of {repeat}")
    names = ("push -> run recorded (notification, dispatch)", "recorded -> a worker took it",
             "the worker's build (bud, push, records)")
    for label, values in zip(names, zip(*parts, strict=True), strict=True):
        print(f"   {label:<48} {statistics.median(values):6.2f} s")


def three_levels(stack: Services, work: Path, registry: str, mids: int, apps: int) -> None:
    name = f"lvl{uuid.uuid4().hex[:6]}"
    base = f"{registry}/{name}/base:1"
    push_base(work, base, "0")
    created: list[str] = []
    try:
        for m in range(mids):
            task = f"{name}-m{m:02d}"
            stack.tasks.create(Task(name=task, images=[f"{name}/mid{m:02d}:1"],
                                    context=context(work, task, f"FROM {base}\nRUN echo {m} > /mid\n")))
            created.append(task)
        for a in range(apps):
            task = f"{name}-a{a:03d}"
            mid = f"{registry}/{name}/mid{a % mids:02d}:1"
            stack.tasks.create(Task(name=task, images=[f"{name}/app{a:03d}:{{{{.Run.ID}}}}"],
                                    context=context(work, task, f"FROM {mid}\nRUN echo {a} > /app\n")))
            created.append(task)
        cap = stack.settings.brakes.wave_max_running
        raw_build(work, f"FROM {base}\nRUN echo m > /mid\n", f"{registry}/{name}/rawmid:1")
        raw_mid = raw_builds_at_once(work, f"FROM {base}\nRUN echo m > /mid\n",
                                     f"{registry}/{name}/rawmid:1", cap)
        raw_app = raw_builds_at_once(work, f"FROM {registry}/{name}/rawmid:1\nRUN echo a > /app\n",
                                     f"{registry}/{name}/rawapp:1", cap)
        pushed = push_base(work, base, "1")
        first = wait(lambda: stack.runs.newest(task=f"{name}-m00", top=1)[0], 300, "the wave")[0]
        wave_id = wait(lambda: stack.runs.get(first.run_id)[0].wave_id, 60, "its wave")
        def ended() -> Wave | None:
            try:  # the run is recorded a moment before its wave's own row
                wave = stack.waves.waves.get(wave_id)[0]
            except WaveNotFound:
                return None
            return wave if wave.state != WaveState.ACTIVE else None

        wave = wait(ended, 3600, "the wave to end")
        members = stack.waves.waves.members(wave_id)
        runs = [stack.runs.get(m.run_id)[0] for m in members]
        last = max(r.finished_at for r in runs if r.finished_at).timestamp()
        floor = math.ceil(mids / cap) * raw_mid + math.ceil(apps / cap) * raw_app
        took = last - pushed
        print(f"2. three levels (1 -> {mids} -> {apps}), base push -> last run finished: {took:.1f} s; "
              f"floor (critical path, {cap} raw builds at once: {math.ceil(mids / cap)} x {raw_mid:.2f} s + "
              f"{math.ceil(apps / cap)} x {raw_app:.2f} s) {floor:.1f} s; ratio {took / floor:.2f}x")
        print(f"   wave {wave_id}: {wave.state}, {wave.counts}")
    finally:
        for task in created:
            stack.tasks.delete(task)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="end-to-end measurements (median printed)")
    parser.add_argument("--mid", type=int, default=20)
    parser.add_argument("--app", type=int, default=200)
    parser.add_argument("--skip-levels", action="store_true", help="only the end-to-end figure")
    parser.add_argument("--skip-end-to-end", action="store_true", help="only the three-level figure")
    args = parser.parse_args()
    for name in ("AzureWebJobsStorage", "REGISTRY", "BASETRIGGER_URL"):
        if not os.environ.get(name):
            parser.error(f"{name} is not set: run `make up`, "
                         "then `eval \"$(python3 scripts/stack.py env)\"`")
    stack = Services(config.load(dict(os.environ, BASETRIGGER_REGISTRY=os.environ["REGISTRY"])))
    registry = os.environ["REGISTRY"]
    # Under the stack's contexts folder: its host reads directory contexts in place only there.
    with tempfile.TemporaryDirectory(dir=os.environ.get("STACK_CONTEXTS")) as tmp:
        if not args.skip_end_to_end:
            end_to_end(stack, Path(tmp), registry, args.repeat)
        if not args.skip_levels:
            three_levels(stack, Path(tmp), registry, args.mid, args.app)
    return 0


if __name__ == "__main__":
    sys.exit(main())
