"""A big push answers before its waiting runs are recorded (their wave's backlog); the API still
lists a pending run for every dependent at once, by id and by task, and cancels one on request.
The app's own functions are called as the host calls them, on real Azurite."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import azure.functions as func
import pytest

from functions import api, webhook_common, webhooks_distribution
from shared.bootstrap import Services
from tests.conftest import unique_settings
from tests.functions.test_app import by_name
from tests.integration.test_dispatch import NEW, add_dependents

N = 130  # above run_life.BACKLOG_ABOVE
MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


@pytest.fixture
def app(monkeypatch):
    services = Services(unique_settings())
    for module in (webhooks_distribution, webhook_common, api):
        monkeypatch.setattr(module, "services", lambda: services)
    # The process "stops" right after the push answered: the backlog is not recorded.
    monkeypatch.setattr(services.lifecycle, "record_in_background", lambda wave_id: None)
    yield services
    services.storage.drop_all()


def call(name: str, method: str, url: str, params: dict | None = None, route: dict | None = None,
         body: dict | None = None) -> tuple[int, dict]:
    request = func.HttpRequest(method, url, params=params or {}, route_params=route or {},
                               body=json.dumps(body).encode() if body is not None else b"")
    answer = by_name()[name].user_function(request)
    return answer.status_code, json.loads(answer.get_body() or b"{}")


def test_every_dependent_is_listed_and_cancelable_before_the_backlog_is_recorded(app):
    add_dependents(app, N)
    envelope = {"events": [{
        "id": str(uuid.uuid4()), "timestamp": datetime.now(UTC).isoformat(), "action": "push",
        "target": {"mediaType": MANIFEST, "digest": NEW, "repository": "baseimages/node", "tag": "9-alpine"},
        "request": {"host": "localhost:5000"}}]}
    status, _ = call("distribution_webhook", "POST", "/api/hooks/distribution", body=envelope)
    assert status == 200
    recorded, _ = app.runs.newest(top=1000)
    assert len(recorded) == app.settings.brakes.wave_max_running  # the rest are in the backlog
    status, listed = call("api_runs", "GET", "/api/runs", params={"top": "1000"})
    assert status == 200 and len(listed["runs"]) == N
    assert {r["status"] for r in listed["runs"]} == {"Queued"}
    status, by_task = call("api_runs", "GET", "/api/runs", params={"task": "app129"})
    (pending,) = by_task["runs"]
    run_id = pending["run_id"]
    status, one = call("api_run", "GET", f"/api/runs/{run_id}", route={"run_id": run_id})
    assert status == 200 and one["task"] == "app129"
    status, canceled = call("api_run_cancel", "POST", f"/api/runs/{run_id}/cancel", route={"run_id": run_id})
    assert status == 200 and canceled["status"] == "Canceled"


def test_wave_show_lists_every_member_before_the_backlog_is_recorded(app, monkeypatch):
    from functions import wave_api

    monkeypatch.setattr(wave_api, "services", lambda: app)
    add_dependents(app, N)
    envelope = {"events": [{
        "id": str(uuid.uuid4()), "timestamp": datetime.now(UTC).isoformat(), "action": "push",
        "target": {"mediaType": MANIFEST, "digest": NEW, "repository": "baseimages/node", "tag": "9-alpine"},
        "request": {"host": "localhost:5000"}}]}
    assert call("distribution_webhook", "POST", "/api/hooks/distribution", body=envelope)[0] == 200
    (wave,) = app.waves.waves.active()
    assert len(app.waves.waves.members(wave.wave_id)) == app.settings.brakes.wave_max_running
    status, shown = call("api_wave", "GET", f"/api/waves/{wave.wave_id}", route={"wave_id": wave.wave_id})
    assert status == 200 and len(shown["members"]) == N
    assert sum(shown["counts"].values()) == N and "backlog" not in shown
