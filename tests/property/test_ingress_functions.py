"""Every ingress function as the host calls it, on real storage: whatever a sender posts, the Event
Grid function returns (an exception makes Event Grid retry for a day) and each webhook answers below
500, with a recorded decision for what it accepted and the API's error shape for what it refused."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import azure.functions as func
from hypothesis import example, given
from hypothesis import strategies as st

from devhost.eventgrid import decode_event
from shared.adapters.ingress.eventgrid import from_eventgrid
from shared.domain.events import Ignored, ImagePushed, Rejected
from tests.functions.test_app import by_name
from tests.property import strategies as s
from tests.property.conftest import GITHUB_SECRET, HARBOR_AUTH

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def sample(name: str):
    return json.loads((SAMPLES / name).read_text())


GRID = sample("acr-imagepushed-eventgrid-schema.json")
CLOUD = sample("acr-imagepushed-cloudevents-schema.json")
ENVELOPE = {
    "events": [
        {
            "id": "5f7e1e6b-0c3e-4c7c-9c1d-6d3a2f0b8e11",
            "timestamp": "2026-11-30T00:00:00Z",
            "action": "push",
            "target": {
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "digest": "sha256:" + "a" * 64,
                "repository": "base/node",
                "tag": "9-alpine",
            },
            "request": {"host": "localhost:5000"},
        }
    ]
}


def call(function: str, body: bytes, headers: dict[str, str] | None = None) -> func.HttpResponse:
    request = func.HttpRequest("POST", f"/api/{function}", body=body, headers=headers or {})
    return by_name()[function].user_function(request)


def body_of(payload) -> bytes:
    return payload if isinstance(payload, bytes) else json.dumps(payload).encode()


def answered_below_500(answer: func.HttpResponse) -> dict:
    assert answer.status_code < 500, answer.get_body()[:500]
    data = json.loads(answer.get_body())
    if answer.status_code >= 400:
        assert set(data["error"]) == {"code", "message"}, data
    else:
        assert isinstance(data["decisions"], list)
    return data


raw_bodies = st.one_of(
    st.binary(max_size=64),
    st.just(b'{"a":' * 5000 + b"1" + b"}" * 5000),
    st.just(b"[" * 3000),
    st.just(b"\xff\xfe{}"),
    st.just(b""),
)


@given(st.one_of(s.mutated(GRID), s.mutated(CLOUD), s.any_grid_event))
@example({**GRID, "id": "%" * 200})
@example({**GRID, "id": {"a": 1}})
@example({**CLOUD, "id": "\U0001f600" * 256})
def test_the_event_grid_function_never_raises(edge, event):
    if not isinstance(event, dict):
        return  # the host answers 400 to a batch holding anything but objects
    try:
        decoded = decode_event(event)
    except (ValueError, TypeError, RecursionError):
        return  # the host answers 400 before any function runs
    by_name()["eventgrid_image_pushed"].user_function(decoded)
    if isinstance(decoded, func.CloudEvent):
        parts = dict(event_id=decoded.id, event_type=decoded.type, data=decoded.get_json(), time=decoded.time)
    else:
        parts = dict(
            event_id=decoded.id,
            event_type=decoded.event_type,
            data=decoded.get_json(),
            time=decoded.event_time,
        )
    result = from_eventgrid(**parts)
    if isinstance(result, Rejected):
        return
    assert isinstance(result, ImagePushed | Ignored)
    assert edge.decisions.seen(result.event_id) is not None  # what was accepted is recorded


@given(st.one_of(s.mutated(ENVELOPE), s.envelope, raw_bodies))
@example({"events": [{**ENVELOPE["events"][0], "id": "#" * 250}]})
def test_the_distribution_webhook_answers_below_500(edge, payload):
    answered_below_500(call("distribution_webhook", body_of(payload)))


@given(
    st.one_of(
        s.mutated(sample("harbor-push-default.json")),
        s.mutated(sample("harbor-push-cloudevents.json")),
        s.json_values,
        raw_bodies,
    )
)
@example({"type": "PUSH_ARTIFACT", "occur_at": 1, "event_data": {"resources": 5}})
def test_the_harbor_webhook_answers_below_500(edge, payload):
    answered_below_500(call("harbor_webhook", body_of(payload), {"Authorization": HARBOR_AUTH}))


@given(st.one_of(s.mutated(sample("dockerhub-push.json")), s.json_values, raw_bodies))
def test_the_dockerhub_webhook_answers_below_500(edge, payload):
    answered_below_500(call("dockerhub_webhook", body_of(payload)))


@given(
    st.one_of(
        s.mutated(sample("github-package-published.json")),
        s.mutated(sample("github-registry-package-published.json")),
        s.json_values,
        raw_bodies,
    ),
    st.sampled_from(["package", "registry_package", "ping", "push", ""]) | st.text(max_size=8),
    s.event_id.filter(lambda v: isinstance(v, str) and v.isprintable() and v.isascii()),
)
@example(
    {
        **sample("github-package-published.json"),
        "package": {**sample("github-package-published.json")["package"], "namespace": None, "owner": "x"},
    },
    "package",
    "0b7c5c9e-1111-2222-3333-444455556666",
)
def test_the_github_webhook_answers_below_500(edge, payload, event, delivery):
    body = body_of(payload)
    signature = "sha256=" + hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
    answered_below_500(
        call(
            "github_webhook",
            body,
            {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery, "X-Hub-Signature-256": signature},
        )
    )
