"""A task's registry credentials through the real `/api/tasks/{name}/credentials` handler (in this
process, on services wired to the stack's Azurite): each mistake is a 4xx with its own code, mapped
by api_handler's one table (functions/http.py), and no answer holds the password."""

from __future__ import annotations

import json

import azure.functions as func
import pytest

from functions import api, registry_api
from shared.bootstrap import Services
from tests.conftest import unique_settings

PASSWORD = "pw-never-shown-7f3a"


@pytest.fixture
def services(monkeypatch):
    services = Services(unique_settings())
    monkeypatch.setattr(api, "services", lambda: services)
    monkeypatch.setattr(registry_api, "services", lambda: services)
    yield services
    services.storage.drop_all()


def call(method: str, body: dict | None = None, **params: str) -> tuple[int, dict]:
    request = func.HttpRequest(method, "/api/tasks/app/credentials", params=params,
                               route_params={"name": "app"},
                               body=json.dumps(body).encode() if body is not None else b"")
    response = registry_api.api_task_credentials(request)
    return response.status_code, json.loads(response.get_body())


@pytest.fixture
def task(services, tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    request = func.HttpRequest("POST", "/api/tasks", body=json.dumps(
        {"name": "app", "images": ["app:1"], "context": str(tmp_path)}).encode())
    assert api.api_tasks(request).status_code == 201


def test_each_credential_mistake_has_its_status_and_code(task):
    credential = {"login_server": "registry.example.com", "username": "u", "password": PASSWORD}
    added = call("POST", credential)
    assert added[0] == 200 and PASSWORD not in json.dumps(added[1])
    assert added[1]["credentials"][0]["password"] is True
    refused = {
        "again": call("POST", credential),
        "unknown server": call("DELETE", login_server="other.example.com"),
        "identity and password": call("POST", {"login_server": "x.azurecr.io", "use_identity": True,
                                               "password": PASSWORD}),
        "no server": call("POST", {"username": "u"}),
        "password of the wrong type": call("PATCH", {"login_server": "registry.example.com",
                                                     "password": [PASSWORD]}),
    }
    codes = {what: (status, answer["error"]["code"]) for what, (status, answer) in refused.items()}
    assert codes == {"again": (409, "CredentialExists"), "unknown server": (404, "CredentialNotFound"),
                     "identity and password": (400, "InvalidCredential"), "no server": (400, "BadRequest"),
                     "password of the wrong type": (400, "BadRequest")}
    assert "missing field(s): login_server" in refused["no server"][1]["error"]["message"]
    assert all(PASSWORD not in json.dumps(answer) for _, answer in refused.values())
