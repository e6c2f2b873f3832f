import json
from pathlib import Path

import pytest

from shared.domain.events import (
    Ignored,
    ImagePushed,
    MalformedEvent,
    from_distribution_envelope,
    from_eventgrid,
)

SAMPLES = Path(__file__).resolve().parents[2] / "tests" / "samples"


def load(name):
    return json.loads((SAMPLES / name).read_text())


def test_eventgrid_schema_sample_becomes_image_pushed():
    event = load("acr-imagepushed-eventgrid-schema.json")
    pushed = from_eventgrid(event_id=event["id"], event_type=event["eventType"], data=event["data"],
                            time=event["eventTime"])
    assert isinstance(pushed, ImagePushed)
    assert pushed.reference == "jolovcr.azurecr.io/samples/nginx:latest"
    assert pushed.digest == "sha256:57a94fc99816c6aa225678b738ac40d85422e75dbb96115f1bb9b6ed77176166"
    assert pushed.time.year == 2021 and pushed.time.microsecond == 660994


def test_cloudevents_sample_becomes_the_same_event():
    event = load("acr-imagepushed-cloudevents-schema.json")
    pushed = from_eventgrid(event_id=event["id"], event_type=event["type"], data=event["data"],
                            time=event["time"])
    assert pushed.reference == "jolovcr.azurecr.io/samples/nginx:latest"
    assert pushed.event_id == "c25fdb80-ebbd-4dd0-a29c-a7349e6388f6"


def test_other_event_types_are_ignored_with_a_reason():
    result = from_eventgrid(event_id="e1", event_type="Microsoft.ContainerRegistry.ImageDeleted",
                            data={}, time=None)
    assert isinstance(result, Ignored) and "ImageDeleted" in result.reason


@pytest.mark.parametrize("data,message", [
    ({"target": {"repository": "a", "tag": "1"}, "request": {"host": "r.io"}}, "digest"),
    ({"target": {"digest": "sha256:" + "a" * 64, "tag": "1"}, "request": {"host": "r.io"}}, "repository"),
    ({"target": {"repository": "a", "tag": "1", "digest": "sha256:" + "a" * 64}}, "host"),
    ({"target": {"repository": "UPPER", "tag": "1", "digest": "sha256:" + "a" * 64},
      "request": {"host": "r.io"}}, "not a valid reference"),
    ("not-an-object", "no data"),
])
def test_malformed_image_pushed_names_what_is_missing(data, message):
    with pytest.raises(MalformedEvent, match=message):
        from_eventgrid(event_id="e1", event_type="Microsoft.ContainerRegistry.ImagePushed",
                       data=data, time=None)


def test_event_without_id_is_malformed():
    with pytest.raises(MalformedEvent, match="no id"):
        from_eventgrid(event_id=None, event_type="x", data={}, time=None)


def distribution_event(**overrides):
    event = {
        "id": "a1", "timestamp": "2026-11-27T10:00:00.123456789Z", "action": "push",
        "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                   "digest": "sha256:" + "b" * 64, "repository": "baseimages/node", "tag": "9-alpine"},
        "request": {"host": "localhost:5000", "method": "PUT"},
    }
    event.update(overrides)
    return event


def test_distribution_envelope_keeps_only_tagged_manifest_pushes():
    blob = distribution_event(id="b", target={"mediaType": "application/octet-stream",
                                              "digest": "sha256:" + "c" * 64, "repository": "x"})
    pull = distribution_event(id="c", action="pull")
    untagged = distribution_event(id="d", target={
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + "d" * 64,
        "repository": "x"})
    results = from_distribution_envelope({"events": [blob, pull, untagged, distribution_event()]})
    assert [type(r).__name__ for r in results] == ["Ignored", "Ignored", "Ignored", "ImagePushed"]
    assert results[3].reference == "localhost:5000/baseimages/node:9-alpine"
    assert "blob" in results[0].reason and "pull" in results[1].reason and "tag" in results[2].reason


@pytest.mark.parametrize("body", [[], {"events": "x"}, {"events": [{"action": "push"}]}, None])
def test_malformed_envelopes_are_rejected(body):
    with pytest.raises(MalformedEvent):
        from_distribution_envelope(body)
