"""Bad input through the running host: each answered with a 4xx (or acknowledged and recorded, for
events no retry can fix), never a 5xx that makes a sender retry for a day."""

from __future__ import annotations

import base64
import gzip
import os
import tarfile
import time
import uuid

import pytest
import requests

from shared.domain.vocabulary import Outcome
from tests.integration.test_pipeline import post_eventgrid

DEEP = b'{"a":' * 10_000 + b"1" + b"}" * 10_000


@pytest.fixture(scope="module")
def api():
    key = {"x-functions-key": os.environ["BASETRIGGER_KEY"]}

    def call(method, path, **kwargs):
        return requests.request(method, f"{os.environ['BASETRIGGER_URL']}/api{path}", headers=key,
                                timeout=30, **kwargs)

    return call


def rejected(stack, event_id: str):
    """The rejection recorded for an event id (rejections keep no marker: found among the recent)."""
    for _ in range(50):
        found = [d for d in stack.decisions.recent(top=50) if d.event_id == event_id]
        if found:
            return found[0]
        time.sleep(0.1)
    return None


@pytest.mark.parametrize(("event_id", "recorded_as"), [
    ({"a": 1}, "{'a': 1}"),
    ("x" * 2000, "x" * 120 + "…"),
])
def test_event_grid_events_with_ids_that_cannot_be_stored_are_acknowledged_and_recorded(
        stack, event_id, recorded_as):
    answer = post_eventgrid([{"id": event_id, "eventType": "push", "subject": "s", "data": {},
                              "eventTime": "2026-11-29T00:00:00Z", "dataVersion": "1"}])
    assert answer.status_code == 202, answer.text
    decision = rejected(stack, recorded_as)
    assert decision is not None and decision.outcome == Outcome.REJECTED
    assert "event id" in decision.reason


@pytest.mark.parametrize("target", [
    {"digest": "sha256:" + "f" * 70_000},
    {"repository": "r" * 200_000},
    {"digest": "sha256:xyz"},
])
def test_event_grid_pushes_with_oversized_or_malformed_fields_are_rejected_not_retried(stack, target):
    event_id = str(uuid.uuid4())
    data = {"target": {"repository": "app", "tag": "1", "digest": "sha256:" + "a" * 64, **target},
            "request": {"host": "localhost:5000"}}
    answer = post_eventgrid([{"id": event_id, "eventType": "Microsoft.ContainerRegistry.ImagePushed",
                              "subject": "s", "data": data, "eventTime": "2026-11-29T00:00:00Z",
                              "dataVersion": "1"}])
    assert answer.status_code == 202, answer.text
    decision = rejected(stack, event_id)
    assert decision is not None and decision.outcome == Outcome.REJECTED


def test_deeply_nested_bodies_get_400_on_every_json_route(api):
    for method, path in (("POST", "/tasks"), ("PATCH", "/tasks/x"), ("POST", "/tasks/x/runs"),
                         ("POST", "/builds"), ("POST", "/hooks/distribution")):
        answer = api(method, path, data=DEEP)
        assert answer.status_code == 400, (path, answer.text)
        assert "nested too deeply" in answer.json()["error"]["message"]
    deep = requests.post(f"{os.environ['BASETRIGGER_URL']}/runtime/webhooks/eventgrid",
                         params={"functionName": "eventgrid_image_pushed",
                                 "code": os.environ["BASETRIGGER_KEY"]},
                         headers={"aeg-event-type": "Notification"}, data=DEEP, timeout=30)
    assert deep.status_code == 400


@pytest.mark.parametrize(("method", "path"), [("GET", "/tasks/a%2Fb"), ("DELETE", "/tasks/..%2Fx"),
                                              ("PATCH", "/tasks/a%2Fb"), ("POST", "/tasks/a%23b/runs")])
def test_task_names_outside_the_pattern_are_refused_before_storage(api, method, path):
    answer = api(method, path, json={})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "InvalidTask"


def test_an_archive_that_would_unpack_huge_gets_413_and_no_run(api):
    zeros = tarfile.TarInfo("zeros")
    zeros.size = 1024**3  # 1 GiB declared; the header alone is enough to refuse it
    bomb = base64.b64encode(gzip.compress(zeros.tobuf() + bytes(4096))).decode()
    before = api("GET", "/runs", params={"top": 1}).json()["runs"]
    answer = api("POST", "/builds", json={"images": ["bomb:{{.Run.ID}}"], "context": bomb})
    assert answer.status_code == 413, answer.text
    assert answer.json()["error"]["code"] == "ContextTooLarge" and "MiB" in answer.json()["error"]["message"]
    assert api("GET", "/runs", params={"top": 1}).json()["runs"] == before
