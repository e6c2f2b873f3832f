"""`base changes` on the real registry: bases built FROM scratch with busybox, a hand-made dpkg status
or apk installed file and an /etc/os-release, pushed again with changes, and the classification
read back through the registry module (shared.service_layer.base_changes)."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import requests

from shared.domain.base_changes import ChangeKind
from shared.domain.decisions import Decision
from shared.domain.tasks import Task
from shared.domain.vocabulary import EventSource, Outcome, RunStatus
from shared.domain.waves import Wave
from shared.service_layer.base_changes import NoPreviousDigest, WaveChanges
from tests.integration.buildah_tools import BUSYBOX, _tls, buildah, push

DPKG_V1 = """\
Package: bash
Status: install ok installed
Architecture: amd64
Version: 5.2.15-2
Description: the shell
 continuation

Package: libc6
Status: install ok installed
Architecture: amd64
Version: 2.36-9
"""
DPKG_V2 = DPKG_V1.replace("5.2.15-2", "5.2.21-1") + """
Package: curl
Status: install ok installed
Architecture: amd64
Version: 8.5.0-2
"""
DEBIAN_12 = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'
DEBIAN_13 = 'PRETTY_NAME="Debian GNU/Linux 13 (trixie)"\nID=debian\nVERSION_ID="13"\n'
APK_V1 = "P:musl\nV:1.2.4-r2\nA:x86_64\n\nP:zlib\nV:1.3-r0\nA:x86_64\n"
APK_V2 = "P:musl\nV:1.2.4-r3\nA:x86_64\n"


def build_base(workdir: Path, image: str, files: dict[str, str], env: str = "A=1",
               platform: str | None = None) -> str:
    """FROM scratch: busybox, then each file at its path; pushed; its digest. (No RUN: any
    `platform` builds without emulation; its busybox is amd64's, which nothing runs here.)"""
    context = workdir / uuid.uuid4().hex[:8]
    context.mkdir(parents=True)
    shutil.copy(BUSYBOX, context / "busybox")
    lines = ["FROM scratch", "COPY busybox /bin/busybox"]
    for i, (path, content) in enumerate(files.items()):
        (context / f"f{i}").write_text(content)
        lines.append(f"COPY f{i} {path}")
    lines.append(f"ENV {env}")
    (context / "Dockerfile").write_text("\n".join(lines) + "\n")
    buildah("bud", "--isolation", "chroot", "--layers=false", *(["--platform", platform] if platform else []),
            "-t", image, str(context))
    return push(image, workdir)


def push_index(workdir: Path, image: str, members: list[str]) -> str:
    """A manifest list of the local images `members`, pushed to `image`; its digest."""
    name = f"changes-list-{uuid.uuid4().hex[:8]}"
    buildah("manifest", "create", name)
    try:
        for member in members:
            buildah("manifest", "add", name, member)
        digest_file = workdir / "index-digest"
        buildah("manifest", "push", "--all", *_tls(), "--digestfile", str(digest_file), name,
                f"docker://{image}")
    finally:
        buildah("manifest", "rm", name)
    return digest_file.read_text().strip()


def recommit(workdir: Path, image: str, *config: str) -> str:
    """The image committed again (a new `created`, an empty layer), with `buildah config` changes."""
    container = buildah("from", *_tls(), image).strip()
    try:
        if config:
            buildah("config", *config, container)
        buildah("commit", container, image)
    finally:
        buildah("rm", container)
    return push(image, workdir)


def record_push(services, base: str, digest: str) -> None:
    """The decision a push of `digest` left (what `base changes` reads the previous digest from)."""
    services.decisions.record(Decision("ev-" + uuid.uuid4().hex, EventSource.DISTRIBUTION,
                                       Outcome.NO_DEPENDENTS, "no task", image=base, digest=digest))


@pytest.fixture
def base(tmp_path):
    image = f"{os.environ['REGISTRY']}/changes-{uuid.uuid4().hex[:10]}/base:1"
    yield image
    # Only the images this test made (a manifest list leaves no local image under this name).
    subprocess.run(["buildah", "--storage-driver", "vfs", "rmi", "-f", image], capture_output=True,
                   check=False)


def test_each_kind_of_change_is_classified(services, base, tmp_path):
    changes = services.base_changes
    v1 = build_base(tmp_path, base, {"/var/lib/dpkg/status": DPKG_V1, "/etc/os-release": DEBIAN_12})

    timestamps_only = recommit(tmp_path, base)
    identical = changes.compare(base, v1, timestamps_only)
    assert identical.kind == ChangeKind.IDENTICAL, identical.to_dict()
    assert len(identical.platforms) == 1 and identical.platforms[0].layers_empty

    env = changes.compare(base, v1, recommit(tmp_path, base, "--env", "A=2"))
    assert env.kind == ChangeKind.METADATA
    old_env, new_env = env.platforms[0].config["Env"]
    assert "A=1" in old_env and "A=2" in new_env and set(env.platforms[0].config) == {"Env"}

    upgraded = changes.compare(base, v1, build_base(tmp_path, base, {
        "/var/lib/dpkg/status": DPKG_V2, "/etc/os-release": DEBIAN_12}))
    assert upgraded.kind == ChangeKind.PACKAGES
    platform = upgraded.platforms[0]
    assert [(u.package, u.old, u.new) for u in platform.packages_upgraded] == [
        ("bash", "5.2.15-2", "5.2.21-1")]
    assert platform.packages_added == {"curl": "8.5.0-2"} and platform.packages_removed == {}
    assert "bash 5.2.15-2 -> 5.2.21-1" in upgraded.summary()

    new_os = changes.compare(base, v1, build_base(tmp_path, base, {
        "/var/lib/dpkg/status": DPKG_V1, "/etc/os-release": DEBIAN_13}))
    assert new_os.kind == ChangeKind.OS_RELEASE
    assert new_os.platforms[0].os_release == ("Debian GNU/Linux 12 (bookworm)",
                                              "Debian GNU/Linux 13 (trixie)")


def test_a_multi_platform_base_is_compared_platform_by_platform(services, base, tmp_path):
    amd64, arm64 = base.replace(":1", ":amd64"), base.replace(":1", ":arm64")
    files = {"/var/lib/dpkg/status": DPKG_V1, "/etc/os-release": DEBIAN_12}
    try:
        build_base(tmp_path, amd64, files)
        build_base(tmp_path, arm64, files, platform="linux/arm64")
        before = push_index(tmp_path, base, [amd64, arm64])
        build_base(tmp_path, arm64, {**files, "/var/lib/dpkg/status": DPKG_V2}, platform="linux/arm64")
        after = push_index(tmp_path, base, [amd64, arm64])
        change = services.base_changes.compare(base, before, after)
        assert [(p.platform, p.kind) for p in change.platforms] == [
            ("linux/amd64", ChangeKind.IDENTICAL), ("linux/arm64", ChangeKind.PACKAGES)], change.to_dict()
        assert change.kind == ChangeKind.PACKAGES and "linux/arm64: packages" in change.summary()
        # A task building amd64 recorded that platform's manifest: only that platform is compared.
        amd64_manifest = services.registry.inspect(f"{base.rsplit(':', 1)[0]}@{before}",
                                                   with_platforms=True).digest_for("linux/amd64")
        own = services.base_changes.compare(base, amd64_manifest, after)
        assert [(p.platform, p.kind) for p in own.platforms] == [("linux/amd64", ChangeKind.IDENTICAL)]
    finally:
        buildah("rmi", "-f", amd64, arm64)


def test_the_same_layers_rewrapped_are_identical_content(services, base, tmp_path):
    oci = build_base(tmp_path, base, {"/lib/apk/db/installed": APK_V1})
    digest_file = tmp_path / "docker-format"
    buildah("push", *_tls(), "--format", "v2s2", "--digestfile", str(digest_file), base,
            f"docker://{base}")
    docker = digest_file.read_text().strip()
    assert docker != oci
    change = services.base_changes.compare(base, oci, docker)
    assert change.kind == ChangeKind.IDENTICAL, change.to_dict()
    assert not change.platforms[0].layers_added and not change.platforms[0].layers_removed


def test_apk_packages_and_the_default_digests(services, base, tmp_path):
    changes = services.base_changes
    v1 = build_base(tmp_path, base, {"/lib/apk/db/installed": APK_V1, "/etc/os-release": "ID=alpine\n"})
    with pytest.raises(NoPreviousDigest):
        changes.compare(base)  # nothing known before the current digest
    # The previous push's decision names v1; --to defaults to what the tag points at now.
    record_push(services, base, v1)
    v2 = build_base(tmp_path, base, {"/lib/apk/db/installed": APK_V2, "/etc/os-release": "ID=alpine\n"})
    change = changes.compare(base)
    assert (change.old_digest, change.new_digest) == (v1, v2)
    platform = change.platforms[0]
    assert change.kind == ChangeKind.PACKAGES
    assert [(u.package, u.old, u.new) for u in platform.packages_upgraded] == [
        ("musl", "1.2.4-r2", "1.2.4-r3")]
    assert platform.packages_removed == {"zlib": "1.3-r0"}


def test_the_change_is_noted_on_the_wave_once(services, base, tmp_path):
    v1 = build_base(tmp_path, base, {"/var/lib/dpkg/status": DPKG_V1})
    record_push(services, base, v1)
    v2 = build_base(tmp_path, base, {"/var/lib/dpkg/status": DPKG_V2})
    waves = services.waves.waves
    wave = Wave("w" + str(uuid.uuid4().int % 10**9), f"{base}@{v2}", None)
    waves.create(wave, [])
    notes = WaveChanges(services.base_changes, waves)
    line = notes.note(wave.wave_id)
    assert line is not None and line.startswith("packages") and "bash 5.2.15-2 -> 5.2.21-1" in line
    stored, _ = waves.get(wave.wave_id)
    assert stored.base_change == line
    assert notes.note(wave.wave_id) == line  # read back, not computed again
    manual = Wave("w" + str(uuid.uuid4().int % 10**9), "manual run da5", None)
    waves.create(manual, [])
    assert notes.note(manual.wave_id) is None


def test_a_base_push_notes_its_change_on_the_wave_the_decision_and_the_log(stack, tmp_path):
    """The whole way on the stack: the push's wave, its decision and its run's log header."""
    from tests.integration.test_pipeline import wait_for_decision, wait_for_run

    name = f"ch{uuid.uuid4().hex[:8]}"
    base = f"{os.environ['REGISTRY']}/{name}/base:1"
    try:
        build_base(tmp_path, base, {"/var/lib/dpkg/status": DPKG_V1, "/etc/os-release": DEBIAN_12})
        context = tmp_path / "app"
        context.mkdir()
        (context / "Dockerfile").write_text("ARG BASE\nFROM ${BASE}\nCOPY hello /hello\n")
        (context / "hello").write_text("hello\n")
        task = stack.tasks.create(Task(name=f"{name}-app", images=[f"{name}/app:{{{{.Run.ID}}}}"],
                                       context=str(context), build_args={"BASE": base}))
        v2 = build_base(tmp_path, base, {"/var/lib/dpkg/status": DPKG_V2, "/etc/os-release": DEBIAN_12})
        run = wait_for_run(stack, task.name)
        assert run.status == RunStatus.SUCCEEDED, run.reason
        header = stack.logs.read(run.run_id).decode().splitlines()[:3]
        assert any(line.startswith("base change: packages") and "bash 5.2.15-2 -> 5.2.21-1" in line
                   for line in header), header
        assert run.wave_id
        wave, _ = stack.waves.waves.get(run.wave_id)
        assert wave.base_change and wave.base_change.startswith("packages")
        decision = wait_for_decision(stack, base, v2, Outcome.QUEUED)
        assert decision.change == wave.base_change
        # `task why`: the task's verdict on that push carries the change too
        (verdict,) = [v for v in stack.history.why(task.name) if v.digest == v2]
        assert verdict.change == wave.base_change
    finally:
        buildah("rmi", "-f", base)


def test_the_api_answers_bad_input_and_unreadable_registries_with_4xx(stack):
    url, key = os.environ["BASETRIGGER_URL"], os.environ["BASETRIGGER_KEY"]
    some_digest = "sha256:" + "1" * 64
    cases = [({}, 400), ({"image": "Not A Ref"}, 400), ({"image": "busybox@" + some_digest}, 400),
             ({"image": "busybox:1", "from": "sha256:short"}, 400),
             ({"image": f"{os.environ['REGISTRY']}/nothing-here/x:1", "from": some_digest}, 404),
             ({"image": "localhost:1/nobody/listens:1", "from": some_digest}, 422)]
    for params, expected in cases:
        answer = requests.get(f"{url.rstrip('/')}/api/bases/changes", params=params,
                              headers={"x-functions-key": key}, timeout=60)
        assert answer.status_code == expected, (params, answer.text)
        assert answer.json()["error"]["message"]
