"""Source triggers on a host of this checkout, with the context on a local git server over HTTP:
a pushed commit and its GitHub `push` webhook (GitHub's published payload shape) start a run of
that commit; a wrong signature gets 401; a commit that changes FROM moves the task's dependencies."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
import uuid

import pytest
import requests

from tests.conftest import unique_settings
from tests.git_server import bare_repository, commit_file, git_http_server
from tests.integration.buildah_tools import push_base
from tests.own_host import own_host

SECRET = "source-trigger-secret"


@pytest.fixture
def settings():
    settings = unique_settings()
    yield settings
    from shared.bootstrap import Services

    Services(settings).storage.drop_all()


def github_push(url: str, commit: str, before: str) -> dict:
    """The fields of GitHub's published `push` sample that a source trigger reads, and some it does not."""
    return {"ref": "refs/heads/main", "before": before, "after": commit, "created": False, "deleted": False,
            "forced": False, "compare": f"{url}/compare/{before[:12]}...{commit[:12]}",
            "commits": [{"id": commit, "message": "change", "distinct": True}],
            "head_commit": {"id": commit, "message": "change"},
            "repository": {"id": 1296269, "name": "app", "full_name": "octo/app", "private": False,
                           "html_url": url.removesuffix(".git"), "clone_url": url,
                           "default_branch": "main", "master_branch": "main"},
            "pusher": {"name": "octo"}, "sender": {"login": "octo"}}


def deliver(host, payload: dict, secret: str = SECRET) -> requests.Response:
    body = json.dumps(payload).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return requests.post(f"{host.url}/api/hooks/github", data=body, timeout=120, headers={
        "X-GitHub-Event": "push", "X-GitHub-Delivery": str(uuid.uuid4()), "X-Hub-Signature-256": signature,
        "Content-Type": "application/json"})


def finished(host, run_id: str) -> dict:
    deadline = time.monotonic() + 240
    while True:
        run = host.api().get(f"{host.url}/api/runs/{run_id}", timeout=30).json()
        if run["status"] in ("Succeeded", "Failed", "Error", "Canceled", "Timeout"):
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} still {run['status']}")
        time.sleep(1)


def test_a_pushed_commit_starts_a_run_of_it_and_a_changed_from_moves_the_dependencies(settings, tmp_path):
    registry = os.environ.get("REGISTRY", "localhost:5000")
    name = f"src{uuid.uuid4().hex[:8]}"
    first_base, second_base = f"{registry}/{name}/base:1", f"{registry}/{name}/other:1"
    push_base(tmp_path, first_base, "one")
    push_base(tmp_path, second_base, "two")
    root, work = bare_repository(tmp_path)
    first = commit_file(work, "Dockerfile", f"FROM {first_base}\nRUN cat /etc/base-version\n", "first")
    with git_http_server(root) as server, own_host(
            tmp_path / "host.log", BASETRIGGER_TABLE_PREFIX=settings.table_prefix,
            BASETRIGGER_BUILD_QUEUE=settings.build_queue, BASETRIGGER_GITHUB_WEBHOOK_SECRET=SECRET) as host:
        url = f"{server}/app.git"
        created = host.api().post(f"{host.url}/api/tasks", timeout=120, json={
            "name": name, "images": [f"{name}/app:{{{{.Run.Commit}}}}"], "context": url, "branch": "main",
            "commit_trigger_enabled": True})
        assert created.status_code == 201, created.text
        assert [d["image"] for d in created.json()["dependencies"]] == [first_base]

        second = commit_file(work, "Dockerfile", f"FROM {second_base}\nRUN cat /etc/base-version\n", "move")
        payload = github_push(url, second, first)
        assert deliver(host, payload, secret="wrong").status_code == 401
        answer = deliver(host, payload)
        assert answer.status_code == 200, answer.text
        (decision,) = answer.json()["decisions"]
        assert decision["outcome"] == "queued", decision
        (run_id,) = decision["runs"]

        task = host.api().get(f"{host.url}/api/tasks/{name}", timeout=30).json()
        assert [d["image"] for d in task["dependencies"]] == [second_base]  # before the run ends
        run = finished(host, run_id)
        assert run["status"] == "Succeeded", run["reason"]
        assert run["trigger"] == "Commit" and run["commit"] == second and run["branch"] == "main"
        assert run["output_images"] == [f"{registry}/{name}/app:{second}"]
        log = host.api().get(f"{host.url}/api/runs/{run_id}/log", timeout=30).text
        assert "two" in log  # built FROM the new base
