"""A delivery of a push that another delivery is dispatching right now waits a little, then asks
to be delivered again: 503 with Retry-After on every HTTP ingress (never a 500), and a deliberate
DispatchIncomplete on the Event Grid trigger (its failure is what makes Event Grid retry).

The app's own functions are called as the host calls them, on real Azurite; the push is held as a
concurrent delivery holds it (DispatchClaims.hold_push), and the wait is shortened for the test.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import azure.functions as func
import pytest

from functions import wave_api, webhook_common, webhooks_distribution
from shared.bootstrap import Services
from shared.service_layer import dispatch
from shared.service_layer.dispatch import DispatchIncomplete
from tests.conftest import unique_settings
from tests.functions.test_app import by_name

DIGEST = "sha256:" + "b" * 64
MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


@pytest.fixture
def held(monkeypatch):
    """The app's services, and the base `registry/busy/base` held by another delivery."""
    services = Services(unique_settings())
    for module in (webhooks_distribution, webhook_common, wave_api):
        monkeypatch.setattr(module, "services", lambda: services)
    monkeypatch.setattr(dispatch, "BUSY_WAIT_SECONDS", 0.5)
    registry = services.settings.registry_host
    services.claims.hold_push(f"{registry}/busy/base")  # held by repository, not by tag or digest
    yield services
    services.storage.drop_all()


def test_the_distribution_webhook_answers_503_with_retry_after_for_a_push_being_dispatched(held):
    envelope = {"events": [{
        "id": str(uuid.uuid4()), "timestamp": datetime.now(UTC).isoformat(), "action": "push",
        "target": {"mediaType": MANIFEST, "digest": DIGEST, "repository": "busy/base", "tag": "1"},
        "request": {"host": held.settings.registry_host}}]}
    request = func.HttpRequest("POST", "/api/hooks/distribution", body=json.dumps(envelope).encode())
    answer = by_name()["distribution_webhook"].user_function(request)
    assert answer.status_code == 503, answer.get_body()
    assert answer.headers["Retry-After"]
    assert b"DispatchFailed" in answer.get_body()


def test_base_rebuild_answers_503_with_retry_after_for_a_push_being_dispatched(held):
    body = {"image": f"{held.settings.registry_host}/busy/base:1", "digest": DIGEST}
    request = func.HttpRequest("POST", "/api/bases/rebuild", body=json.dumps(body).encode())
    answer = by_name()["api_base_rebuild"].user_function(request)
    assert answer.status_code == 503, answer.get_body()
    assert answer.headers["Retry-After"]


def test_the_event_grid_trigger_fails_deliberately_for_a_push_being_dispatched(held, monkeypatch):
    from functions import eventgrid_ingress

    monkeypatch.setattr(eventgrid_ingress, "services", lambda: held)
    event = func.EventGridEvent(
        id=str(uuid.uuid4()), data={"id": "x", "action": "push", "target": {
            "mediaType": MANIFEST, "digest": DIGEST, "repository": "busy/base", "tag": "1"},
            "request": {"host": held.settings.registry_host}},
        topic="", subject="busy/base:1", event_type="Microsoft.ContainerRegistry.ImagePushed",
        event_time=datetime.now(UTC), data_version="1.0")
    # A failed invocation is Event Grid's "deliver again"; it is this one, not an unhandled error.
    with pytest.raises(DispatchIncomplete):
        by_name()["eventgrid_image_pushed"].user_function(event)
