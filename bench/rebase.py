"""Rebase benchmark: one base update handled by a rebuild and by a rebase, end to end.

For each case (a small app on a ~1 MB busybox base; the same app on a 200 MB base), two tasks of
the same COPY-only app are built FROM two repositories holding the same base: one with
`--update-policy rebuild`, one with `--update-policy auto`. Each is built once by hand (not timed).
Then the same base update (a new version of every base layer, the 200 MB one included; the config
unchanged) is pushed to each repository in turn, and the time from the end of the push to the run
recorded Succeeded is measured: the notification, the dispatch, the queue, the worker, and either
buildah (pull, build, push) or the rebase (registry calls only). Runs on the stack of this checkout
(its Functions host serves this code).

    python bench/rebase.py [--big-mb 200]      (target: rebase >= 10x faster than the rebuild)

It prints both times, the ratio, the bytes the rebase moved (from its run log) and the size of the
new manifest and config it wrote, next to which the bytes moved should be close.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared import config  # noqa: E402
from shared.bootstrap import Services  # noqa: E402
from shared.domain.image_ref import ImageRef  # noqa: E402
from shared.domain.runs import Run  # noqa: E402
from shared.domain.tasks import Task  # noqa: E402
from shared.domain.vocabulary import TERMINAL, RunStatus, UpdatePolicy  # noqa: E402

BASE_DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
{big}COPY version /etc/base-version
ENV PATH=/bin
"""
APP_DOCKERFILE = """\
ARG BASE
FROM ${BASE}
COPY app.txt /app/app.txt
CMD ["/bin/busybox", "cat", "/app/app.txt"]
"""


def buildah(*args: str) -> str:
    done = subprocess.run(["buildah", "--storage-driver", "vfs", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"buildah {args[0]} failed: {done.stderr[-2000:]}")
    return done.stdout


def build_base(workdir: Path, tag: str, version: str, big_mb: int) -> None:
    context = workdir / f"base-{uuid.uuid4().hex[:6]}"
    context.mkdir(parents=True)
    shutil.copy("/bin/busybox", context / "busybox")
    (context / "version").write_text(version + "\n")
    big = ""
    if big_mb:
        # Incompressible, new in every version: a patch that replaces the base's big layer.
        with open(context / "big.bin", "wb") as handle:
            for _ in range(big_mb):
                handle.write(os.urandom(1024 * 1024))
        big = "COPY big.bin /opt/big.bin\n"
    (context / "Dockerfile").write_text(BASE_DOCKERFILE.format(big=big))
    buildah("bud", "--isolation", "chroot", "--layers=false", "-t", tag, str(context))
    shutil.rmtree(context)


def push(local: str, image: str, workdir: Path) -> str:
    digest_file = workdir / "digest"
    buildah("push", "--digestfile", str(digest_file), local, f"docker://{image}")
    return digest_file.read_text().strip()


def wait_for_run(services: Services, task: str, after: set[str], timeout: float = 900) -> Run:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs, _ = services.runs.newest(task=task, top=5)
        fresh = [r for r in runs if r.run_id not in after and r.status in TERMINAL]
        if fresh:
            return fresh[0]
        time.sleep(0.1)
    raise SystemExit(f"no run of {task} finished within {timeout:.0f} s")


def case(services: Services, workdir: Path, contexts: Path, prefix: str, big_mb: int) -> dict[str, object]:
    registry = os.environ["REGISTRY"]
    old_local, new_local = f"localhost/{prefix}-base:old", f"localhost/{prefix}-base:new"
    build_base(workdir, old_local, "1", big_mb)
    build_base(workdir, new_local, "2", big_mb)
    results: dict[str, tuple[float, Run]] = {}
    tasks: dict[UpdatePolicy, tuple[Task, str]] = {}
    for policy in (UpdatePolicy.REBUILD, UpdatePolicy.AUTO):
        base = f"{registry}/{prefix}/base-{policy}:1"
        push(old_local, base, workdir)
        context = contexts / f"{prefix}-{policy}"
        context.mkdir(parents=True)
        (context / "Dockerfile").write_text(APP_DOCKERFILE)
        (context / "app.txt").write_text("the app\n")
        task = services.tasks.create(Task(name=f"{prefix}-{policy}", context=str(context),
                                          images=[f"{prefix}/app-{policy}:{{{{.Run.ID}}}}"],
                                          build_args={"BASE": base}, update_policy=policy))
        first = services.scheduler.run_task(task.name)
        done = wait_for_run(services, task.name, set())
        if done.run_id != first.run_id or done.status != RunStatus.SUCCEEDED:
            raise SystemExit(f"the first build of {task.name} ended {done.status}: {done.reason}")
        tasks[policy] = (task, base)
    for policy, (task, base) in tasks.items():
        before = {r.run_id for r in services.runs.newest(task=task.name)[0]}
        push(new_local, base, workdir)
        pushed = time.monotonic()
        run = wait_for_run(services, task.name, before)
        elapsed = time.monotonic() - pushed
        if run.status != RunStatus.SUCCEEDED:
            raise SystemExit(f"{task.name}: run {run.run_id} ended {run.status}: {run.reason}")
        results[str(policy)] = (elapsed, run)
    rebuild_time, rebuild_run = results["rebuild"]
    rebase_time, rebase_run = results["auto"]
    log = services.logs.read(rebase_run.run_id).decode()
    moved = re.search(r"rebase moved (\d+) bytes", log)
    written = services.registry.distribution.manifest(rebase_run.output_images[0])
    config_digest = written.document()["config"]["digest"]
    config_size = len(services.registry.distribution.blob(rebase_run.output_images[0], config_digest))
    for local in (old_local, new_local):
        subprocess.run(["buildah", "--storage-driver", "vfs", "rmi", local], capture_output=True)
    return {"rebuild_s": rebuild_time, "rebase_s": rebase_time,
            "rebuild_run_s": rebuild_run.duration_seconds, "rebase_run_s": rebase_run.duration_seconds,
            "rebuild_builder": rebuild_run.builder,
            "rebase_builder": rebase_run.builder, "decision": rebase_run.update_decision,
            "moved": int(moved[1]) if moved else None, "manifest_and_config": len(written.body) + config_size,
            "images": (ImageRef.parse(rebuild_run.output_images[0]).name,
                       ImageRef.parse(rebase_run.output_images[0]).name)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--big-mb", type=int, default=200, help="the big base's extra layer, in MiB")
    args = parser.parse_args()
    for name in ("AzureWebJobsStorage", "REGISTRY", "STACK_CONTEXTS"):
        if not os.environ.get(name):
            raise SystemExit(f"{name} is not set: eval \"$(python3 scripts/stack.py env)\" after `up`")
    services = Services(config.load(dict(os.environ, BASETRIGGER_REGISTRY=os.environ["REGISTRY"])))
    workdir = Path(os.environ.get("BASETRIGGER_WORK_DIR", "/tmp")) / f"bench-rebase-{uuid.uuid4().hex[:6]}"
    workdir.mkdir(parents=True)
    contexts = Path(os.environ["STACK_CONTEXTS"]) / workdir.name
    try:
        print("end to end: push done -> run Succeeded; in the worker: the run's started -> finished")
        print(f"{'case':<22}{'rebuild':>10}{'rebase':>10}{'ratio':>8}{'in worker':>20}{'ratio':>8}"
              f"{'rebase moved':>15}{'manifest+config':>17}")
        for label, big_mb in (("small app, 1 MB base", 0), (f"{args.big_mb} MB base", args.big_mb)):
            prefix = f"bench{uuid.uuid4().hex[:6]}"
            found = case(services, workdir, contexts, prefix, big_mb)
            if found["rebase_builder"] != "rebase":
                raise SystemExit(f"{label}: the auto task was not rebased: {found['decision']}")
            ratio = found["rebuild_s"] / found["rebase_s"]  # type: ignore[operator]
            worker_ratio = found["rebuild_run_s"] / found["rebase_run_s"]  # type: ignore[operator]
            in_worker = f"{found['rebuild_run_s']:.2f}s / {found['rebase_run_s']:.2f}s"
            print(f"{label:<22}{found['rebuild_s']:>9.2f}s{found['rebase_s']:>9.2f}s{ratio:>7.1f}x"
                  f"{in_worker:>20}{worker_ratio:>7.1f}x"
                  f"{found['moved']:>13} B{found['manifest_and_config']:>15} B", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(contexts, ignore_errors=True)


if __name__ == "__main__":
    main()
