"""Rebase on the local stack: real registries, buildah, the Functions host's worker. Nothing mocked.

A base update of a task with `--update-policy auto|rebase` is rebased (its layers swapped through
the registry API) when that is provably a rebuild's equal, and rebuilt otherwise, with why.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from shared.domain.builds import BuildContext, BuildRequest
from shared.domain.image_ref import ImageRef
from shared.domain.rebase import BASE_DIGEST, BASE_NAME, EVENT_DIGEST, RUN_ID, RebasePlan, layer_digests
from shared.domain.tasks import Task
from shared.domain.vocabulary import RunStatus, Trigger, UpdatePolicy
from shared.service_layer.runs import transition
from tests.integration.buildah_tools import BUSYBOX, buildah, push
from tests.integration.test_pipeline import wait_for_run

# A base of two layers (busybox, then its version), FROM scratch; `env` changes its configuration.
BASE_DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
COPY version /etc/base-version
ENV PATH=/bin {env}
CMD ["/bin/busybox", "sh"]
"""
COPY_APP = """\
ARG BASE
FROM ${BASE}
COPY app.txt /app/app.txt
ENV APP=1
CMD ["/bin/busybox", "cat", "/app/app.txt", "/etc/base-version"]
"""
RUN_APP = """\
ARG BASE
FROM ${BASE}
RUN ["/bin/busybox", "cp", "/etc/base-version", "/app-base-version"]
"""


@pytest.fixture
def names():
    return f"rb{uuid.uuid4().hex[:8]}"


def push_base(workdir: Path, image: str, version: str, env: str = "") -> str:
    context = workdir / f"base-{uuid.uuid4().hex[:6]}"
    context.mkdir(parents=True)
    shutil.copy(BUSYBOX, context / "busybox")
    (context / "version").write_text(version + "\n")
    (context / "Dockerfile").write_text(BASE_DOCKERFILE.format(env=env))
    buildah("bud", "--isolation", "chroot", "--layers=false", "-t", image, str(context))
    return push(image, workdir)


def create_task(stack, tmp_path: Path, name: str, base: str, dockerfile: str, policy: UpdatePolicy,
                rebase_check: str | None = None) -> Task:
    context = tmp_path / name
    context.mkdir()
    (context / "Dockerfile").write_text(dockerfile)
    (context / "app.txt").write_text(f"app of {name}\n")
    registry = os.environ["REGISTRY"]
    return stack.tasks.create(Task(name=name, images=[f"{registry}/{name}/app:{{{{.Run.ID}}}}"],
                                   context=str(context), build_args={"BASE": base}, update_policy=policy,
                                   rebase_check=rebase_check))


def run_manually(stack, task: Task):
    before = {r.run_id for r in stack.runs.newest(task=task.name)[0]}
    started = stack.scheduler.run_task(task.name, force=True)
    run = wait_for_run(stack, task.name, after=before, timeout=300)
    assert run.run_id == started.run_id and run.status == RunStatus.SUCCEEDED, run.reason
    return run


def image_update(stack, task: Task, base: str, tmp_path: Path, version: str, env: str = ""):
    before = {r.run_id for r in stack.runs.newest(task=task.name)[0]}
    digest = push_base(tmp_path, base, version, env)
    run = wait_for_run(stack, task.name, after=before, timeout=300)
    assert (run.status, run.trigger, run.cause) == (RunStatus.SUCCEEDED, Trigger.IMAGE_UPDATE,
                                                   f"{base}@{digest}"), run.reason
    return run, digest


def manifest(stack, reference: str) -> dict:
    return stack.registry.distribution.manifest(reference).document()


def root_filesystem(image: str) -> dict[str, tuple]:
    """Every path of the image's mounted root filesystem: its type, mode, owner and content hash
    (or link target). Times are left out: a rebuild's differ by nature."""
    container = buildah("from", "--pull-always", f"docker://{image}").strip()
    try:
        root = Path(buildah("mount", container).strip())
        found = {}
        for path in sorted(root.rglob("*")):
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                content = os.readlink(path)
            elif stat.S_ISREG(info.st_mode):
                content = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                content = ""
            found[str(path.relative_to(root))] = (stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode),
                                                  info.st_uid, info.st_gid, content)
        return found
    finally:
        buildah("rm", container)


def containers() -> list[dict]:
    """buildah's working containers (the list can fail while another process changes it: again)."""
    for _ in range(3):
        listed = subprocess.run(["buildah", "--storage-driver", "vfs", "containers", "--json"],
                                capture_output=True, text=True)
        if listed.returncode == 0:
            return json.loads(listed.stdout or "null") or []
    raise AssertionError(f"buildah containers failed: {listed.stderr}")


def run_in(image: str, *argv: str) -> str:
    container = buildah("from", "--pull-always", f"docker://{image}").strip()
    try:
        return buildah("run", "--isolation", "chroot", container, "--", *argv)
    finally:
        buildah("rm", container)


def test_auto_rebases_a_copy_only_app_onto_a_layer_patch_and_it_equals_a_rebuild(stack, names, tmp_path):
    registry = os.environ["REGISTRY"]
    base = f"{registry}/{names}/node:20"
    push_base(tmp_path, base, "20.1")
    task = create_task(stack, tmp_path, f"{names}-copy", base, COPY_APP, UpdatePolicy.AUTO)
    first = run_manually(stack, task)
    assert first.builder == "buildah" and first.update_decision is None
    built = manifest(stack, f"{registry}/{task.name}/app@{first.output_digest}")
    assert built["annotations"][BASE_NAME] == base and built["annotations"][RUN_ID] == first.run_id
    assert first.base_layers[base] == layer_digests(manifest(stack, f"{registry}/{names}/node@"
                                                             f"{first.base_digests[base]}"))

    # No sources are read for a rebase: the context is away while it runs.
    context = Path(task.context)
    context.rename(context.with_name("away"))
    try:
        rebased, new_base = image_update(stack, task, base, tmp_path, "20.2")
    finally:
        context.with_name("away").rename(context)
    assert rebased.builder == "rebase", stack.logs.read(rebased.run_id).decode()
    assert rebased.update_decision == ("rebased: the final stage only adds files and metadata, and "
                                       "the base changed only its layers")
    assert rebased.base_digests == {base: new_base}
    assert rebased.base_layers[base] == layer_digests(manifest(stack, f"{registry}/{names}/node@{new_base}"))
    log = stack.logs.read(rebased.run_id).decode()
    assert "no layer downloaded or uploaded" in log and "update policy auto: rebased" in log
    document = manifest(stack, rebased.output_images[0])
    assert document["annotations"][BASE_DIGEST] == new_base
    assert document["annotations"][EVENT_DIGEST] == new_base
    assert document["annotations"][RUN_ID] == rebased.run_id
    assert stack.tasks.store.get(task.name).dependencies[0].digest == new_base

    # A full rebuild on the same new base: the same files, byte for byte.
    rebuilt = run_manually(stack, task)
    assert rebuilt.builder == "buildah"
    assert root_filesystem(rebased.output_images[0]) == root_filesystem(rebuilt.output_images[0])
    # And the rebased image runs, on the new base's files.
    assert run_in(rebased.output_images[0], "/bin/busybox", "cat", "/app/app.txt", "/etc/base-version") \
        == f"app of {task.name}\n20.2\n"


def test_a_run_in_the_final_stage_makes_auto_rebuild(stack, names, tmp_path):
    base = f"{os.environ['REGISTRY']}/{names}/node:20"
    push_base(tmp_path, base, "20.1")
    task = create_task(stack, tmp_path, f"{names}-run", base, RUN_APP, UpdatePolicy.AUTO)
    run_manually(stack, task)
    run, _ = image_update(stack, task, base, tmp_path, "20.2")
    assert (run.builder, run.update_decision) == ("buildah", "rebuilt: RUN in final stage")
    assert "update policy auto: rebuilt: RUN in final stage" in stack.logs.read(run.run_id).decode()


def test_a_base_env_change_makes_auto_rebuild(stack, names, tmp_path):
    base = f"{os.environ['REGISTRY']}/{names}/node:20"
    push_base(tmp_path, base, "20.1", env="NODE_VERSION=20.1")
    task = create_task(stack, tmp_path, f"{names}-env", base, COPY_APP, UpdatePolicy.AUTO)
    run_manually(stack, task)
    run, _ = image_update(stack, task, base, tmp_path, "20.2", env="NODE_VERSION=20.2")
    assert (run.builder, run.update_decision) == ("buildah", "rebuilt: base ENV changed")
    # `task why` shows it with the push's decision.
    (verdict,) = [v for v in stack.history.why(task.name) if v.run_id == run.run_id]
    assert verdict.update_decision == "rebuilt: base ENV changed"
    assert run_in(run.output_images[0], "/bin/busybox", "cat", "/etc/base-version") == "20.2\n"


def test_an_image_whose_bottom_is_not_the_recorded_base_is_refused_and_rebuilt(stack, names, tmp_path):
    registry = os.environ["REGISTRY"]
    base = f"{registry}/{names}/node:20"
    foreign_digest = push_base(tmp_path, base, "something else")  # once under the tag, long ago
    push_base(tmp_path, base, "20.1")
    task = create_task(stack, tmp_path, f"{names}-foreign", base, COPY_APP, UpdatePolicy.REBASE)
    first = run_manually(stack, task)
    # The record now says the last image was built on another base than the one under it.
    transition(stack.runs, first.run_id, lambda run: replace(run, base_digests={base: foreign_digest}))
    run, _ = image_update(stack, task, base, tmp_path, "20.2")
    assert (run.builder, run.update_decision) == ("buildah",
                                                  "rebuilt: the image's bottom layers are not the old base's")
    assert run_in(run.output_images[0], "/bin/busybox", "cat", "/etc/base-version") == "20.2\n"


# ---- two platforms, on the builder itself ----------------------------------------------------
def build_index(tmp_path: Path, image: str, dockerfile: str, files: dict[str, str],
                build_args: dict[str, str] | None = None) -> str:
    """An amd64 + arm64 index built with buildah (no RUN, so no emulation), pushed; its digest."""
    context = tmp_path / f"ctx-{uuid.uuid4().hex[:6]}"
    context.mkdir()
    for name, text in files.items():
        (context / name).write_text(text)
    (context / "Dockerfile").write_text(dockerfile)
    listing = f"list-{uuid.uuid4().hex[:8]}"
    args = [a for k, v in (build_args or {}).items() for a in ("--build-arg", f"{k}={v}")]
    buildah("bud", "--isolation", "chroot", "--layers=false", "--platform", "linux/amd64,linux/arm64",
            "--manifest", listing, *args, str(context))
    digest_file = tmp_path / "index-digest"
    try:
        buildah("manifest", "push", "--all", "--digestfile", str(digest_file), listing, f"docker://{image}")
    finally:
        subprocess.run(["buildah", "--storage-driver", "vfs", "manifest", "rm", listing], capture_output=True)
    return digest_file.read_text().strip()


PLATFORM_BASE = "FROM scratch\nCOPY version /etc/base-version\n"
PLATFORM_APP = "ARG BASE\nFROM ${BASE}\nCOPY app.txt /app.txt\n"


def test_a_two_platform_image_is_rebased_per_platform_under_a_new_index(stack, names, tmp_path):
    from shared.adapters.builders.rebase import RebaseBuilder

    registry = os.environ["REGISTRY"]
    base = f"{registry}/{names}/multi:1"
    old_base = build_index(tmp_path, base, PLATFORM_BASE, {"version": "one\n"})
    app = f"{registry}/{names}/multi-app:1"
    old_app = build_index(tmp_path, app, PLATFORM_APP, {"app.txt": "app\n"}, {"BASE": f"{base}"})
    new_base = build_index(tmp_path, base, PLATFORM_BASE, {"version": "two\n"})

    target = f"{registry}/{names}/multi-app:rebased"
    request = BuildRequest(run_id="da0", context=BuildContext(path=str(tmp_path)), dockerfile="Dockerfile",
                           images=[target], platform="linux/amd64", annotations={RUN_ID: "da0"},
                           final_base=base)
    lines: list[str] = []
    builder = RebaseBuilder(stack.registry)
    plan = RebasePlan(base=base, image=f"{registry}/{names}/multi-app@{old_app}",
                      old_base=f"{registry}/{names}/multi@{old_base}",
                      new_base=f"{registry}/{names}/multi@{new_base}", prove_config=True)
    result = builder.rebase(request, plan, lines.append)
    assert result.status == RunStatus.SUCCEEDED, lines

    index = manifest(stack, target)
    assert index["annotations"][BASE_DIGEST] == new_base and index["annotations"][RUN_ID] == "da0"
    old_index, base_index = manifest(stack, f"{app}@{old_app}"), manifest(stack, f"{base}@{new_base}")
    platforms = {e["platform"]["architecture"]: e["digest"] for e in index["manifests"]}
    assert sorted(platforms) == ["amd64", "arm64"]
    for arch, digest in platforms.items():
        rebased = manifest(stack, f"{registry}/{names}/multi-app@{digest}")
        old_entry, base_entry = (next(e["digest"] for e in listing["manifests"]
                                      if e["platform"]["architecture"] == arch)
                                 for listing in (old_index, base_index))
        own = layer_digests(manifest(stack, f"{app}@{old_entry}"))[-1]
        assert layer_digests(rebased) == [*layer_digests(manifest(stack, f"{base}@{base_entry}")), own]
        config = json.loads(stack.registry.distribution.blob(target, rebased["config"]["digest"]))
        assert config["architecture"] == arch  # each platform keeps its own config
    # The bytes moved: manifests and configs only (a few KiB), never a layer.
    moved = next(int(line.split()[2]) for line in lines if line.startswith("rebase moved "))
    assert moved < 32 * 1024, lines
    # A redelivered run rebases again: the same bytes, the same digest, nothing new in the registry.
    again = builder.rebase(request, plan, lines.append)
    assert again.output_digest == result.output_digest
    assert ImageRef.parse(target).tag == "rebased"


# ---- a private registry, with the task's credentials -------------------------------------------
def test_a_rebase_signs_in_with_the_task_credentials_and_never_shows_the_password(stack, names, tmp_path):
    from shared.adapters.builders.rebase import RebaseBuilder
    from shared.adapters.builders.registry_auth import auth_file_args
    from shared.domain.credentials import RegistryCredential
    from shared.domain.manifests import RegistryError

    registry = os.environ["AUTH_REGISTRY"]
    good = RegistryCredential.create(registry, os.environ["AUTH_REGISTRY_USER"],
                                     os.environ["AUTH_REGISTRY_PASSWORD"])
    base, app = f"{registry}/{names}/base:1", f"{registry}/{names}/app:1"

    def build_and_push(image: str, dockerfile: str, files: dict[str, str]) -> str:
        context = tmp_path / f"ctx-{uuid.uuid4().hex[:6]}"
        context.mkdir()
        for name, text in {**files, "Dockerfile": dockerfile}.items():
            (context / name).write_text(text)
        with auth_file_args([good], tmp_path) as auth:
            buildah("bud", "--isolation", "chroot", "--layers=false", *auth, "--build-arg", f"BASE={base}",
                    "-t", image, str(context))
            buildah("push", *auth, "--digestfile", str(tmp_path / "digest"), image, f"docker://{image}")
        return (tmp_path / "digest").read_text().strip()

    old_base = build_and_push(base, PLATFORM_BASE, {"version": "one\n"})
    old_app = build_and_push(app, PLATFORM_APP, {"app.txt": "app\n"})
    new_base = build_and_push(base, PLATFORM_BASE, {"version": "two\n"})
    plan = RebasePlan(base=base, image=f"{registry}/{names}/app@{old_app}",
                      old_base=f"{registry}/{names}/base@{old_base}",
                      new_base=f"{registry}/{names}/base@{new_base}", prove_config=True)
    target = f"{registry}/{names}/rebased:1"

    def request(credentials):
        return BuildRequest(run_id="da0", context=BuildContext(path=""), dockerfile="Dockerfile",
                            images=[target], platform="linux/amd64", credentials=credentials)

    lines: list[str] = []
    with pytest.raises(RegistryError, match="needs credentials"):  # the worker then rebuilds
        RebaseBuilder(stack.registry).rebase(request(()), plan, lines.append)
    result = RebaseBuilder(stack.registry).rebase(request((good,)), plan, lines.append)
    assert result.status == RunStatus.SUCCEEDED and result.base_digests == {base: new_base}
    assert good.password not in "\n".join(lines)
    rebased = stack.registry.distribution.manifest(target, good).document()
    assert layer_digests(rebased)[0] == layer_digests(
        stack.registry.distribution.manifest(f"{base}@{new_base}", good).document())[0]


def test_a_rebase_check_runs_in_the_rebased_image_and_a_failing_one_rebuilds(stack, names, tmp_path):
    registry = os.environ["REGISTRY"]
    base = f"{registry}/{names}/node:20"
    push_base(tmp_path, base, "20.1")
    passing = create_task(stack, tmp_path, f"{names}-pass", base, COPY_APP, UpdatePolicy.AUTO,
                          rebase_check="/bin/busybox grep -q 'app of' /app/app.txt")
    failing = create_task(stack, tmp_path, f"{names}-fail", base, COPY_APP, UpdatePolicy.AUTO,
                          rebase_check="/bin/busybox false")
    for task in (passing, failing):
        run_manually(stack, task)
    before = {t.name: {r.run_id for r in stack.runs.newest(task=t.name)[0]} for t in (passing, failing)}
    push_base(tmp_path, base, "20.2")
    rebased = wait_for_run(stack, passing.name, after=before[passing.name], timeout=300)
    rebuilt = wait_for_run(stack, failing.name, after=before[failing.name], timeout=300)
    assert (rebased.status, rebased.builder) == (RunStatus.SUCCEEDED, "rebase"), rebased.update_decision
    assert "rebase check in" in stack.logs.read(rebased.run_id).decode()
    assert (rebuilt.status, rebuilt.builder) == (RunStatus.SUCCEEDED, "buildah")
    assert rebuilt.update_decision == "rebuilt: the rebase check `/bin/busybox false` failed (exit 1)"
    # The checks' working containers are gone.
    left = [c["containername"] for c in containers() if c["containername"].startswith("basetrigger-check-")]
    assert not left, left


def test_a_check_container_a_dead_worker_left_is_removed_and_a_live_one_kept(tmp_path):
    from shared.adapters.builders.buildah import CHECK_CONTAINER_PREFIX, BuildahBuilder
    from shared.adapters.builders.ownership import Owner, new_marker

    alive = Owner.this_process()
    dead = Owner(alive.boot, alive.pid, alive.start + 1)  # this pid, another start: not running
    names = {who: f"{CHECK_CONTAINER_PREFIX}{new_marker(owner)}" for who, owner in
             (("dead", dead), ("alive", alive))}
    for name in names.values():
        buildah("from", "--name", name, "scratch")
    try:
        # (its registry is not read by a cleanup)
        BuildahBuilder(None, work_dir=str(tmp_path)).remove_leftovers_of_dead_owners()  # type: ignore[arg-type]
        listed = {c["containername"] for c in containers()}
        assert names["dead"] not in listed and names["alive"] in listed
    finally:
        for name in names.values():
            subprocess.run(["buildah", "--storage-driver", "vfs", "rm", name], capture_output=True)
