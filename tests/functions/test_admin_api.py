"""POST /api/secrets/rotate, the handler as the host calls it, on services wired to the real Azurite."""

from __future__ import annotations

import json

import azure.functions as func
import pytest
from cryptography.fernet import Fernet

from functions import admin_api
from shared.bootstrap import Services
from shared.domain.tasks import Task
from tests.conftest import unique_settings

OLD, NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()


def rotate() -> func.HttpResponse:
    return admin_api.api_secrets_rotate(func.HttpRequest("POST", "/api/secrets/rotate", body=b"{}"))


@pytest.fixture
def old_services():
    services = Services(unique_settings(BASETRIGGER_SECRET_KEY=OLD))
    services.task_store.create(Task(name="app", images=["app:{{.Run.ID}}"], context="https://x.invalid/a.git",
                                    secret_args={"TOKEN": "s3cr3t-value"}))
    yield services
    services.storage.drop_all()


def app_with_keys(old_services: Services, keys: str | None) -> Services:
    settings = unique_settings(BASETRIGGER_TABLE_PREFIX=old_services.settings.table_prefix,
                               BASETRIGGER_SECRET_KEY=keys or "")
    return Services(settings)


def test_rotation_answers_what_it_did_without_keys_or_secrets(old_services, monkeypatch):
    monkeypatch.setattr(admin_api, "services", lambda: app_with_keys(old_services, f"{NEW},{OLD}"))

    response = rotate()

    assert response.status_code == 200
    body = response.get_body().decode()
    report = json.loads(body)
    assert report["resealed"] == ["app"] and report["complete"] is True and report["keys"] == 2
    assert NEW not in body and OLD not in body and "s3cr3t-value" not in body
    assert app_with_keys(old_services, NEW).task_store.get("app").secret_args == {"TOKEN": "s3cr3t-value"}


def test_rotation_without_a_key_is_the_service_s_problem_not_the_caller_s(old_services, monkeypatch):
    monkeypatch.setattr(admin_api, "services", lambda: app_with_keys(old_services, None))

    response = rotate()

    assert response.status_code == 503
    assert json.loads(response.get_body())["error"]["code"] == "SecretsUnavailable"


def test_migrate_moves_schema_2_runs_and_a_second_call_finds_nothing(monkeypatch):
    from tests.integration.test_run_table import _runs, _store_as_schema_2

    services = Services(unique_settings())
    try:
        for run in _runs(services.runs, 3):
            _store_as_schema_2(services.runs, run)
        monkeypatch.setattr(admin_api, "services", lambda: services)
        migrate = func.HttpRequest("POST", "/api/admin/migrate", body=b"{}")
        first = admin_api.api_admin_migrate(migrate)
        assert first.status_code == 200
        nothing = {"decisions": {"decisions": 0, "markers": 0, "holds": 0},
                   "waves": {"waves": 0, "members": 0, "ready_rows": 0}}
        assert json.loads(first.get_body()) == {"runs": {"runs": 3, "rows_removed": 9}, **nothing}
        again = json.loads(admin_api.api_admin_migrate(migrate).get_body())
        assert again == {"runs": {"runs": 0, "rows_removed": 0}, **nothing}
    finally:
        services.storage.drop_all()
