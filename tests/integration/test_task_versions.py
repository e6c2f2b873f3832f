"""Conditional requests on tasks through the local Functions host and Azurite: ETag on every answer
that carries a task, If-Match on PATCH and DELETE (412, nothing changed), If-None-Match on GET
(304), and the CLI's `task update` sending the version it read. The adapter's writes are checked
on Azurite directly too: a conditional save is decided by the table, and a save never inserts.
"""

from __future__ import annotations

import os
import threading
import uuid

import pytest
import requests

from cli import client as cli_client
from cli.main import main
from shared.domain.tasks import Task, TaskChanged, TaskNotFound


@pytest.fixture(scope="module")
def api():
    url, key = os.environ.get("BASETRIGGER_URL"), os.environ.get("BASETRIGGER_KEY")
    if not url or not key:
        pytest.fail("BASETRIGGER_URL / BASETRIGGER_KEY are not set: run the tests with `make test`")
    session = requests.Session()
    session.trust_env = False
    session.headers["x-functions-key"] = key

    def call(method, path, **kwargs):
        return session.request(method, f"{url}/api{path}", timeout=60, **kwargs)

    return call


@pytest.fixture
def task(api, tmp_path):
    """A new task's name; deleted afterwards."""
    registry = os.environ.get("REGISTRY", "localhost:5000")
    # A base that is not in the registry: a PATCH still asks the registry for its digest, which
    # keeps two PATCHes sent together inside the host at the same time.
    (tmp_path / "Dockerfile").write_text(f"FROM {registry}/versions-tests/base:1\n")
    name = f"ver-{uuid.uuid4().hex[:8]}"
    created = api("POST", "/tasks", json={"name": name, "images": ["versions-tests/app:1"],
                                          "context": str(tmp_path)})
    assert created.status_code == 201, created.text
    yield name
    api("DELETE", f"/tasks/{name}")


def test_every_answer_with_a_task_carries_its_version(api, task):
    shown = api("GET", f"/tasks/{task}")
    etag = shown.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"') and shown.json()["etag"] == etag
    assert [t["etag"] for t in api("GET", "/tasks").json()["tasks"] if t["name"] == task] == [etag]

    changed = api("PATCH", f"/tasks/{task}", json={"platform": "linux/arm64"}, headers={"If-Match": etag})
    assert changed.status_code == 200, changed.text
    assert changed.headers["ETag"] not in (None, etag) and changed.json()["etag"] == changed.headers["ETag"]
    assert api("GET", f"/tasks/{task}").headers["ETag"] == changed.headers["ETag"]


def test_if_none_match_answers_304_for_the_version_the_client_has(api, task):
    etag = api("GET", f"/tasks/{task}").headers["ETag"]
    unchanged = api("GET", f"/tasks/{task}", headers={"If-None-Match": etag})
    assert unchanged.status_code == 304 and unchanged.headers["ETag"] == etag and not unchanged.content
    api("PATCH", f"/tasks/{task}", json={"platform": "linux/arm64"})
    assert api("GET", f"/tasks/{task}", headers={"If-None-Match": etag}).status_code == 200


def test_a_patch_with_a_stale_if_match_gets_412_and_changes_nothing(api, task):
    stale = api("GET", f"/tasks/{task}").headers["ETag"]
    newer = api("PATCH", f"/tasks/{task}", json={"build_args": {"A": "1"}}).json()

    refused = api("PATCH", f"/tasks/{task}", json={"images": ["versions-tests/other:1"]},
                  headers={"If-Match": stale})

    assert refused.status_code == 412, refused.text
    assert refused.json()["error"]["code"] == "PreconditionFailed"
    assert refused.headers["ETag"] == newer["etag"]
    assert api("GET", f"/tasks/{task}").json() == newer
    # The version it gives is the one to send again.
    again = api("PATCH", f"/tasks/{task}", json={"images": ["versions-tests/other:1"]},
                headers={"If-Match": refused.headers["ETag"]})
    assert again.status_code == 200 and again.json()["images"] == ["versions-tests/other:1"]
    assert api("PATCH", f"/tasks/{task}", json={"platform": "linux/arm64"},
               headers={"If-Match": "*"}).status_code == 200


def test_two_concurrent_patches_with_the_same_if_match_exactly_one_succeeds(api, task):
    etag = api("GET", f"/tasks/{task}").headers["ETag"]
    answers: dict[str, requests.Response] = {}
    start = threading.Barrier(2)

    def patch(platform: str) -> None:
        start.wait()
        answers[platform] = api("PATCH", f"/tasks/{task}", json={"platform": platform},
                                headers={"If-Match": etag})

    threads = [threading.Thread(target=patch, args=(p,)) for p in ("linux/arm64", "linux/amd64")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    statuses = sorted(a.status_code for a in answers.values())
    assert statuses == [200, 412], {p: a.text for p, a in answers.items()}
    winner = next(p for p, a in answers.items() if a.status_code == 200)
    assert api("GET", f"/tasks/{task}").json()["platform"] == winner


def test_a_delete_with_a_stale_if_match_gets_412_and_the_task_stays(api, task):
    stale = api("GET", f"/tasks/{task}").headers["ETag"]
    api("PATCH", f"/tasks/{task}", json={"platform": "linux/arm64"})

    refused = api("DELETE", f"/tasks/{task}", headers={"If-Match": stale})

    assert refused.status_code == 412 and refused.json()["error"]["code"] == "PreconditionFailed"
    assert api("GET", f"/tasks/{task}").status_code == 200
    assert api("DELETE", f"/tasks/{task}", headers={"If-Match": refused.headers["ETag"]}).status_code == 204
    assert api("GET", f"/tasks/{task}").status_code == 404


def test_a_patch_after_a_delete_does_not_bring_the_task_back(api, task):
    etag = api("GET", f"/tasks/{task}").headers["ETag"]
    assert api("DELETE", f"/tasks/{task}").status_code == 204

    for if_match in (etag, "*"):
        late = api("PATCH", f"/tasks/{task}", json={"platform": "linux/arm64"},
                   headers={"If-Match": if_match})
        assert late.status_code in (404, 412), late.text
    assert api("GET", f"/tasks/{task}").status_code == 404


@pytest.mark.parametrize("header", ["If-Match", "If-None-Match"])
@pytest.mark.parametrize("value", ["abc", '"a"b', "", '"ünï"'])
def test_a_malformed_condition_is_a_400(api, task, header, value):
    method = "GET" if header == "If-None-Match" else "PATCH"
    answer = api(method, f"/tasks/{task}", json={} if method == "PATCH" else None,
                 headers={header: value.encode()})
    assert answer.status_code == 400, answer.text
    assert header in answer.json()["error"]["message"]


# ---- the adapter on Azurite -----------------------------------------------------------------------
def test_the_table_decides_a_conditional_save_and_a_save_never_inserts(services, tmp_path):
    store = services.task_store
    store.create(Task(name="app", images=["app:1"], context=str(tmp_path)))
    read = store.get("app")
    newer = store.save(read)  # no etag: replaces whatever is stored
    assert newer != read.etag and store.get("app").etag == newer

    with pytest.raises(TaskChanged) as refused:
        store.save(read, etag=read.etag)
    assert refused.value.etag == newer
    with pytest.raises(TaskChanged):
        store.delete("app", etag=read.etag)

    store.delete("app", etag=newer)
    for etag in (newer, None):
        with pytest.raises(TaskNotFound):
            store.save(read, etag=etag)
    with pytest.raises(TaskNotFound):
        store.get("app")


# ---- the CLI --------------------------------------------------------------------------------------
def cli(*args: str) -> int:
    return main([*args, "--url", os.environ["BASETRIGGER_URL"], "--key", os.environ["BASETRIGGER_KEY"]])


def test_cli_update_sends_the_version_it_read_and_reports_a_change_made_meanwhile(
        api, task, monkeypatch, capsys):
    read_version = cli_client.Client.task_version

    def read_then_someone_else_changes_it(self, name):
        version = read_version(self, name)
        assert api("PATCH", f"/tasks/{name}", json={"build_args": {"OTHER": "1"}}).status_code == 200
        return version

    monkeypatch.setattr(cli_client.Client, "task_version", read_then_someone_else_changes_it)

    assert cli("task", "update", "--name", task, "--platform", "linux/arm64") == cli_client.EXIT_ERROR

    error = capsys.readouterr().err
    assert "changed since it was read" in error and "nothing was changed" in error
    shown = api("GET", f"/tasks/{task}").json()
    assert shown["platform"] == "linux" and shown["build_args"] == {"OTHER": "1"}

    monkeypatch.undo()  # nobody in between: the update goes through
    assert cli("task", "update", "--name", task, "--platform", "linux/arm64") == cli_client.EXIT_OK
    assert api("GET", f"/tasks/{task}").json()["platform"] == "linux/arm64"


def test_cli_if_match_pins_the_version_for_update_and_delete(api, task, capsys):
    stale = api("GET", f"/tasks/{task}").json()["etag"]
    api("PATCH", f"/tasks/{task}", json={"platform": "linux/arm64"})

    assert cli("task", "update", "--name", task, "--platform", "linux/amd64", "--if-match", stale) == 2
    assert cli("task", "delete", "--name", task, "--yes", "--if-match", stale.strip('"')) == 2
    assert capsys.readouterr().err.count("changed since it was read") == 2
    assert api("GET", f"/tasks/{task}").json()["platform"] == "linux/arm64"

    current = api("GET", f"/tasks/{task}").json()["etag"]
    assert cli("task", "delete", "--name", task, "--yes", "--if-match", current) == 0
    assert api("GET", f"/tasks/{task}").status_code == 404
