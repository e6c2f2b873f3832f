"""Directory task contexts where the builder cannot read the directory (the cloud, or a client on
another machine): the directory is uploaded with the task, as `az acr build` uploads, and runs build
from that upload. On the stack's real Azurite, registry and buildah."""

from __future__ import annotations

import base64
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from cli.build_cmd import pack_context
from shared.bootstrap import Services
from shared.domain.builds import BuildSpec, Source, UploadGone
from shared.domain.tasks import ContextUploadNeeded, Dependency, Task
from shared.domain.vocabulary import RunStatus
from tests.conftest import unique_settings
from tests.integration.buildah_tools import push_base, read_file


def pack(directory: Path) -> str:
    archive, _ = pack_context(directory, "Dockerfile")
    return base64.b64encode(archive).decode()


def app_dir(root: Path, dockerfile: str, **files: str) -> Path:
    root.mkdir(parents=True)
    (root / "Dockerfile").write_text(dockerfile)
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def kept(services: Services, name: str) -> set[str]:
    """The task uploads of task `name` in blob storage."""
    container = services.storage.container("build-contexts")
    return {blob.name for blob in container.list_blobs(name_starts_with=f"task-{name}-")}


def test_a_directory_the_builder_cannot_read_is_built_from_its_upload(services, tmp_path):
    registry = os.environ["REGISTRY"]
    name = f"up{uuid.uuid4().hex[:8]}"
    base = f"{registry}/{name}/base:1"
    digest = push_base(tmp_path, base, "u1")
    marker = f"uploaded {uuid.uuid4().hex}"
    client = app_dir(tmp_path / "client", f"FROM {base}\nCOPY message.txt /message.txt\n",
                     **{"message.txt": marker, ".dockerignore": "secret.txt\n", "secret.txt": "not sent"})

    def task() -> Task:  # the path is the client's: it does not exist where the service runs
        return Task(name=name, images=[f"{name}/app:{{{{.Run.ID}}}}"], context="/home/someone/app")

    with pytest.raises(ContextUploadNeeded):
        services.tasks.create(task())
    created = services.tasks.create(task(), context_archive=pack(client))

    assert created.context_upload and created.context_upload.startswith(f"task-{name}-")
    assert created.dependencies == [Dependency(image=base, digest=digest, runtime=True)]  # read from it
    stored = services.tasks.get(name)
    assert stored.context_upload == created.context_upload
    assert stored.build_spec().source == Source(upload=created.context_upload)
    assert stored.public_dict()["context"] == "/home/someone/app"

    run = services.scheduler.run_task(name)
    finished = services.worker.execute(run.run_id)

    assert finished is not None and finished.status == RunStatus.SUCCEEDED, finished and finished.reason
    assert read_file(f"{registry}/{name}/app:{run.run_id}", "/message.txt") == marker


def test_in_the_cloud_every_directory_context_comes_with_its_archive(tmp_path):
    cloud = Services(unique_settings(BASETRIGGER_BUILDER="acr"))
    try:
        first = app_dir(tmp_path / "v1", "FROM scratch\nCOPY a /a\n", a="1")
        # Even a directory that exists where the service runs is not read there.
        with pytest.raises(ContextUploadNeeded):
            cloud.tasks.create(Task(name="app", images=["app:1"], context=str(first)))
        created = cloud.tasks.create(Task(name="app", images=["app:1"], context=str(first)),
                                     context_archive=pack(first))
        assert created.context_upload

        second = app_dir(tmp_path / "v2", "FROM scratch\nCOPY b /b\n", b="2")
        updated = cloud.tasks.update("app", context=str(second), context_archive=pack(second))
        assert updated.context_upload not in (None, created.context_upload)
        assert kept(cloud, "app") == {updated.context_upload}  # the replaced one is deleted
        # The task keeps its upload through changes that do not touch the context ...
        assert cloud.tasks.update("app", platform="linux/arm64").context_upload == updated.context_upload
        # ... but another directory without its archive is refused, never built from the old upload.
        with pytest.raises(ContextUploadNeeded):
            cloud.tasks.update("app", context=str(first))
        assert cloud.tasks.get("app").context_upload == updated.context_upload

        repo = tmp_path / "repo"
        app_dir(repo, "FROM scratch\n")
        for argv in (["init", "-q", "-b", "main"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@t",
                                                                  "commit", "-qm", "x"]):
            subprocess.run(["git", "-C", str(repo), *argv], check=True, capture_output=True)
        moved = cloud.tasks.update("app", context=f"file://{repo}", branch="main")
        assert moved.context_upload is None
        assert moved.build_spec().source == Source(git_url=f"file://{repo}", branch="main")
        assert kept(cloud, "app") == set()

        cloud.tasks.update("app", context=str(second), context_archive=pack(second))
        cloud.tasks.delete("app")
        assert kept(cloud, "app") == set()
    finally:
        cloud.storage.drop_all()


def test_on_the_local_stack_a_readable_directory_is_read_at_each_run_not_uploaded(services, tmp_path):
    here = app_dir(tmp_path / "app", "FROM scratch\nCOPY a /a\n", a="1")

    created = services.tasks.create(Task(name="app", images=["app:1"], context=str(here)),
                                    context_archive=pack(here))

    assert created.context_upload is None
    assert created.build_spec().source == Source(directory=str(here))
    assert not list(services.storage.container("build-contexts").list_blobs(name_starts_with="task-"))


def test_an_upload_is_removed_and_removing_it_again_is_no_error(services, tmp_path):
    archive, _ = pack_context(app_dir(tmp_path / "app", "FROM scratch\n"), "Dockerfile")
    name = f"task-rm-{uuid.uuid4().hex[:8]}.tar.gz"
    services.sources.upload(name, archive)
    spec = BuildSpec(Source(upload=name))
    for workspace in ("w1", "w2"):  # the worker makes each run's workspace
        (tmp_path / workspace).mkdir()
    assert (services.sources.checkout(spec, tmp_path / "w1") / "Dockerfile").is_file()

    services.sources.remove(name)
    services.sources.remove(name)  # a retried request
    services.sources.remove(f"task-never-{uuid.uuid4().hex[:8]}.tar.gz")

    assert not list(services.storage.container("build-contexts").list_blobs(name_starts_with=name))
    with pytest.raises(UploadGone):
        services.sources.checkout(spec, tmp_path / "w2")
