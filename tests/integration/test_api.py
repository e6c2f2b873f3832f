"""The HTTP API through the local Functions host, against the running stack."""

from __future__ import annotations

import os
import uuid

import pytest
import requests

SECRET = "s3cr3t-value-never-shown"


@pytest.fixture(scope="module")
def api():
    url, key = os.environ.get("BASETRIGGER_URL"), os.environ.get("BASETRIGGER_KEY")
    if not url or not key:
        pytest.fail("BASETRIGGER_URL / BASETRIGGER_KEY are not set: run the tests with `make test`")
    session = requests.Session()
    session.headers["x-functions-key"] = key

    def call(method, path, **kwargs):
        return session.request(method, f"{url}/api{path}", timeout=30, **kwargs)

    return call


@pytest.fixture
def context(tmp_path):
    (tmp_path / "Dockerfile").write_text(
        "ARG REGISTRY_NAME=localhost:5000\nFROM ${REGISTRY_NAME}/api-tests/base:1 AS build\n"
        "FROM scratch\nCOPY --from=build /bin/busybox /bin/busybox\n")
    return str(tmp_path)


def test_task_lifecycle_and_secrets_never_come_back(api, context):
    name = f"api-{uuid.uuid4().hex[:8]}"
    created = api("POST", "/tasks", json={
        "name": name, "images": ["api-tests/app:{{.Run.ID}}"], "context": context,
        "build_args": {"REGISTRY_NAME": "localhost:5000"}, "secret_args": {"TOKEN": SECRET},
        "base_image_trigger_type": "All"})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["dependencies"] == [{"image": "localhost:5000/api-tests/base:1", "digest": None,
                                     "runtime": False}]
    assert body["secret_args"] == ["TOKEN"] and SECRET not in created.text

    assert api("POST", "/tasks", json={"name": name, "images": ["x"], "context": context}).status_code == 409
    shown = api("GET", f"/tasks/{name}")
    assert shown.status_code == 200 and SECRET not in shown.text
    assert name in [t["name"] for t in api("GET", "/tasks").json()["tasks"]]

    updated = api("PATCH", f"/tasks/{name}", json={"base_image_trigger_enabled": False})
    assert updated.json()["base_image_trigger"] == {"enabled": False, "type": "All"}

    run = api("POST", f"/tasks/{name}/runs", json={})
    assert run.status_code == 202 and run.json()["trigger"] == "Manual"
    run_id = run.json()["run_id"]
    assert api("GET", f"/runs/{run_id}").json()["task"] == name
    listed = api("GET", "/runs", params={"task": name}).json()["runs"]
    assert [r["run_id"] for r in listed] == [run_id]
    cancel = api("POST", f"/runs/{run_id}/cancel")
    # either it was still queued, or a worker already took it (its base does not exist, so it fails)
    assert cancel.status_code in (200, 409)
    assert api("POST", f"/runs/{run_id}/cancel").status_code == 409  # finished now either way
    # the image filter takes names as users type them, qualified with the default registry
    by_image = api("GET", "/runs", params={"image": f"api-tests/app:{run_id}"}).json()["runs"]
    assert [r["run_id"] for r in by_image] == [run_id]
    log = api("GET", f"/runs/{run_id}/log")
    assert log.status_code == 200 and "x-log-offset" in log.headers and SECRET not in log.text

    assert api("DELETE", f"/tasks/{name}").status_code == 204
    assert api("GET", f"/tasks/{name}").status_code == 404


@pytest.mark.parametrize("method,path,body,status,code", [
    ("POST", "/tasks", {"images": ["x"]}, 400, "BadRequest"),
    ("POST", "/tasks", {"name": "bad name!", "images": ["x"], "context": "/tmp"}, 400, "InvalidTask"),
    ("POST", "/tasks", {"name": "t", "images": ["x"], "context": "/tmp", "colour": 1}, 400, "BadRequest"),
    ("POST", "/tasks", {"name": "nodf", "images": ["x"], "context": "/nonexistent"}, 400,
     "ContextUploadNeeded"),
    ("POST", "/tasks", {"name": "upper", "images": ["MyApp:{{.Run.ID}}"], "context": "/tmp"}, 400,
     "InvalidTask"),
    ("POST", "/tasks", {"name": "nulls", "images": ["x"], "context": "/tmp", "dockerfile": None}, 400,
     "BadRequest"),
    ("GET", "/tasks/no-such-task", None, 404, "TaskNotFound"),
    ("POST", "/tasks/no-such-task/runs", {}, 404, "TaskNotFound"),
    ("GET", "/runs/da999999999", None, 404, "RunNotFound"),
    ("GET", "/runs/nonsense", None, 404, "RunNotFound"),
    ("GET", "/runs?top=0", None, 400, "BadRequest"),
    ("GET", "/runs?status=Sleeping", None, 400, "BadRequest"),
    ("POST", "/builds", {"images": ["x"], "context": "not base64!"}, 400, "InvalidTask"),
    ("POST", "/builds", {"images": ["UPPER/x"], "context": "AAAA"}, 400, "InvalidTask"),
])
def test_bad_input_gets_a_4xx_with_a_message(api, method, path, body, status, code):
    answer = api(method, path, json=body) if body is not None else api(method, path)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["code"] == code and error["message"]


def test_a_bad_dockerfile_names_its_line(api, tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM scratch\nFROM Not/Valid:ref\n")
    answer = api("POST", "/tasks", json={"name": f"bad-{uuid.uuid4().hex[:6]}", "images": ["x"],
                                          "context": str(tmp_path)})
    assert answer.status_code == 400 and "line 2" in answer.json()["error"]["message"]


def test_requests_without_the_key_are_refused(api):
    url = os.environ["BASETRIGGER_URL"]
    assert requests.get(f"{url}/api/runs", timeout=10).status_code == 401
    assert requests.get(f"{url}/api/runs", params={"code": "wrong"}, timeout=10).status_code == 401


def test_openapi_document_is_served(api):
    doc = api("GET", "/openapi.json").json()
    assert doc["openapi"].startswith("3.") and "/runs" in doc["paths"]


def test_a_secret_arg_read_through_arg_is_warned_about_in_the_task_answer(api, tmp_path):
    """Secret args are build secrets (buildah): `ARG TOKEN` would get nothing, and the answer says so."""
    (tmp_path / "Dockerfile").write_text("FROM scratch\nARG TOKEN\nCOPY Dockerfile /\n")
    name = f"api-{uuid.uuid4().hex[:8]}"
    created = api("POST", "/tasks", json={"name": name, "images": ["api-tests/w:1"], "context": str(tmp_path),
                                          "secret_args": {"TOKEN": SECRET}})
    assert created.status_code == 201, created.text
    (warning,) = created.json()["warnings"]
    assert "`ARG TOKEN` (Dockerfile line 2)" in warning and "RUN --mount=type=secret,id=TOKEN" in warning
    assert api("GET", f"/tasks/{name}").json()["warnings"] == [warning]
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY Dockerfile /\n")
    assert api("PATCH", f"/tasks/{name}", json={"context": str(tmp_path)}).json()["warnings"] == []
    assert api("DELETE", f"/tasks/{name}").status_code == 204


def test_the_update_policy_is_set_shown_changed_and_checked(api, context):
    name = f"api-{uuid.uuid4().hex[:8]}"
    bad = api("POST", "/tasks", json={"name": name, "images": ["x:1"], "context": context,
                                      "update_policy": "sometimes"})
    assert bad.status_code == 400 and "update_policy must be rebuild or rebase or auto" in bad.text
    created = api("POST", "/tasks", json={"name": name, "images": ["x:1"], "context": context})
    assert created.status_code == 201 and created.json()["update_policy"] == "rebuild"
    changed = api("PATCH", f"/tasks/{name}", json={"update_policy": "auto"})
    assert changed.status_code == 200, changed.text
    assert api("GET", f"/tasks/{name}").json()["update_policy"] == "auto"
    checked = api("PATCH", f"/tasks/{name}", json={"rebase_check": "node --version"})
    assert checked.status_code == 200 and checked.json()["rebase_check"] == "node --version"
    unsplittable = api("PATCH", f"/tasks/{name}", json={"rebase_check": "node 'unterminated"})
    assert unsplittable.status_code == 400 and "cannot be split into words" in unsplittable.text
    assert api("PATCH", f"/tasks/{name}", json={"rebase_check": None}).json()["rebase_check"] is None
    assert api("DELETE", f"/tasks/{name}").status_code in (200, 204)
