"""`basetrigger task create/update --context DIR` against a service that cannot read the directory:
the CLI's request goes through the real `/api/tasks` handlers (in this process, on services wired to
the stack's Azurite as the cloud is: BASETRIGGER_BUILDER=acr), is refused with ContextUploadNeeded,
and is sent again with the directory's archive."""

from __future__ import annotations

import argparse
import base64
import io
import json
import tarfile

import azure.functions as func
import pytest

from cli import task_cmd
from cli.client import ApiError
from functions import api
from shared.bootstrap import Services
from tests.conftest import unique_settings


@pytest.fixture
def cloud(monkeypatch):
    services = Services(unique_settings(BASETRIGGER_BUILDER="acr"))
    monkeypatch.setattr(api, "services", lambda: services)
    yield services
    services.storage.drop_all()


def call(handler, method: str, url: str, body: dict, **route) -> dict:
    """The handler as the host calls it; a 4xx/5xx becomes the CLI's ApiError, as cli.client does."""
    response = handler(func.HttpRequest(method, url, body=json.dumps(body).encode(), route_params=route))
    answer = json.loads(response.get_body() or b"null")
    if response.status_code >= 400:
        raise ApiError(answer["error"]["message"], response.status_code, answer["error"]["code"])
    return answer


def test_the_cli_uploads_the_directory_when_the_service_asks_for_it(cloud, tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY app.txt /app.txt\n")
    (tmp_path / "app.txt").write_text("v1")
    (tmp_path / ".dockerignore").write_text("*.log\n")
    (tmp_path / "debug.log").write_text("not sent")
    sent: list[dict] = []

    def create(spec: dict) -> dict:
        sent.append(spec)
        return call(api.api_tasks, "POST", "/api/tasks", spec)

    args = argparse.Namespace(context=str(tmp_path), file="Dockerfile")
    task = task_cmd._send(args, create, {"name": "app", "images": ["app:1"], "context": str(tmp_path)})

    assert [("context_archive" in spec) for spec in sent] == [False, True]
    assert task["context_upload"] and task["context"] == str(tmp_path)
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(sent[1]["context_archive"]))) as tar:
        assert sorted(tar.getnames()) == [".dockerignore", "Dockerfile", "app.txt"]
    stored = cloud.tasks.get("app")
    blob = cloud.storage.container("build-contexts").get_blob_client(stored.context_upload)
    with tarfile.open(fileobj=io.BytesIO(blob.download_blob().readall())) as tar:
        assert tar.extractfile("app.txt").read() == b"v1"

    # `task update --context DIR` sends the directory's new content the same way.
    (tmp_path / "app.txt").write_text("v2")

    def update(spec: dict) -> dict:
        return call(api.api_task, "PATCH", "/api/tasks/app", spec, name="app")

    updated = task_cmd._send(args, update, {"context": str(tmp_path)})
    assert updated["context_upload"] not in (None, task["context_upload"])


def test_other_refusals_are_not_retried(cloud, tmp_path):
    calls = []

    def refuse(spec: dict) -> dict:
        calls.append(spec)
        raise ApiError("task 'app' already exists", 409, "TaskExists")

    args = argparse.Namespace(context=str(tmp_path), file=None)
    with pytest.raises(ApiError, match="already exists"):
        task_cmd._send(args, refuse, {"name": "app", "context": str(tmp_path)})
    assert len(calls) == 1


def test_a_body_with_an_archive_that_is_not_base64_is_refused(cloud, tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    with pytest.raises(ApiError) as refused:
        call(api.api_tasks, "POST", "/api/tasks",
             {"name": "app", "images": ["app:1"], "context": str(tmp_path), "context_archive": "%%%"})
    assert refused.value.status == 400 and "base64" in str(refused.value)
