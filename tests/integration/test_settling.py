"""Settle windows and platform relevance on real Azurite and the stack's registry: bases built FROM
scratch and pushed, each push dispatched as the registry's notification would be (tables and queue of
the test's own, so the stack's host, which hears the same pushes, plays no part)."""

from __future__ import annotations

import os
import subprocess
import uuid
from datetime import timedelta

import pytest

from shared.bootstrap import Services
from shared.domain.events import ImagePushed
from shared.domain.image_ref import ImageRef
from shared.domain.platforms import INDEX_MEDIA_TYPES
from shared.domain.tasks import Task
from shared.domain.vocabulary import EventSource, Outcome, utc_now
from tests.conftest import unique_settings
from tests.integration.buildah_tools import buildah
from tests.integration.test_base_changes import DEBIAN_12, DPKG_V1, DPKG_V2, build_base, push_index

WINDOW = 600
OCI_INDEX = sorted(INDEX_MEDIA_TYPES)[1]  # application/vnd.oci.image.index.v1+json


@pytest.fixture
def settling_services():
    services = Services(unique_settings(BASETRIGGER_SETTLE_SECONDS=f"0,{os.environ['REGISTRY']}={WINDOW}"))
    yield services
    services.storage.drop_all()


def notified(image: str, digest: str, media_type: str | None = None) -> ImagePushed:
    """The event the registry's notification of a push of `image` (tagged) at `digest` becomes."""
    ref = ImageRef.parse(image)
    return ImagePushed(f"ev-{uuid.uuid4().hex}", ref.registry, ref.repository, ref.tag or "latest", digest,
                       utc_now(), EventSource.DISTRIBUTION, media_type=media_type)


def make_task(services: Services, tmp_path, name: str, base: str, platform: str = "linux") -> Task:
    context = tmp_path / name
    context.mkdir()
    (context / "Dockerfile").write_text("ARG BASE\nFROM ${BASE}\nCOPY hello /hello\n")
    (context / "hello").write_text("hello\n")
    return services.tasks.create(Task(name=name, images=[f"{name}/app:{{{{.Run.ID}}}}"], context=str(context),
                                      build_args={"BASE": base}, platform=platform))


@pytest.fixture
def base():
    image = f"{os.environ['REGISTRY']}/settle-{uuid.uuid4().hex[:10]}/base:1"
    yield image
    subprocess.run(["buildah", "--storage-driver", "vfs", "rmi", "-f", image], capture_output=True,
                   check=False)


def test_a_digest_moved_three_times_within_the_window_starts_one_wave_on_the_last(
        settling_services, base, tmp_path):
    services = settling_services
    build_base(tmp_path, base, {"/etc/os-release": DEBIAN_12}, env="N=0")
    task = make_task(services, tmp_path, f"settle{uuid.uuid4().hex[:6]}", base)
    digests = []
    for n in (1, 2, 3):
        digests.append(build_base(tmp_path, base, {"/etc/os-release": DEBIAN_12}, env=f"N={n}"))
        decision = services.ingest.receive([notified(base, digests[-1])])[0]
        assert decision.outcome == Outcome.SETTLING, decision.reason
        assert decision.reason.startswith("settling until ") and decision.runs == []
    assert len(set(digests)) == 3
    assert services.runs.newest(task=task.name)[0] == []
    (settling,) = [s for s, _ in services.settling.pending() if s.reference == base]
    assert (settling.digest, settling.deliveries) == (digests[-1], 3)

    still = utc_now() + timedelta(seconds=WINDOW + 1)
    # A housekeeping pass that dispatched the settled push and died before it removed the row...
    first = services.dispatcher.handle(settling.event(still), settle=False)
    # ...then the next pass, and one more: the same event, decided once.
    (second,) = services.dispatcher.release_settled(still)
    assert services.dispatcher.release_settled(still) == []
    assert second.to_dict() == first.to_dict() and first.outcome == Outcome.QUEUED, first.reason
    runs, _ = services.runs.newest(task=task.name)
    (run,) = runs
    assert run.cause == f"{base}@{digests[-1]}" and run.wave_id
    waves, _ = services.waves.waves.newest()
    assert [w.root for w in waves] == [f"{base}@{digests[-1]}"]


def test_a_two_platform_base_whose_arm64_manifest_alone_changed_triggers_only_the_arm64_task(
        services, base, tmp_path):
    amd64, arm64 = base.replace(":1", ":amd64"), base.replace(":1", ":arm64")
    files = {"/var/lib/dpkg/status": DPKG_V1, "/etc/os-release": DEBIAN_12}
    try:
        build_base(tmp_path, amd64, files)
        build_base(tmp_path, arm64, files, platform="linux/arm64")
        push_index(tmp_path, base, [amd64, arm64])
        suffix = uuid.uuid4().hex[:6]
        amd_task = make_task(services, tmp_path, f"amd{suffix}", base, "linux/amd64")
        arm_task = make_task(services, tmp_path, f"arm{suffix}", base, "linux/arm64")

        build_base(tmp_path, arm64, {**files, "/var/lib/dpkg/status": DPKG_V2}, platform="linux/arm64")
        after = push_index(tmp_path, base, [amd64, arm64])
        (decision,) = services.ingest.receive([notified(base, after, OCI_INDEX)])
        outcomes = {t.task: (t.outcome, t.reason) for t in decision.tasks}
        assert outcomes[amd_task.name][0] == Outcome.PLATFORM_UNCHANGED, outcomes
        assert outcomes[amd_task.name][1].startswith("platform linux/amd64 unchanged")
        assert outcomes[arm_task.name][0] == Outcome.QUEUED, outcomes
        assert [services.runs.get(r)[0].task for r in decision.runs] == [arm_task.name]
    finally:
        buildah("rmi", "-f", amd64, arm64)
