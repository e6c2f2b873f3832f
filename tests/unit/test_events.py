import json
from pathlib import Path

import pytest

from shared.adapters.ingress.distribution import from_distribution_envelope
from shared.adapters.ingress.eventgrid import from_eventgrid
from shared.domain.events import Ignored, ImagePushed
from tests.rejections import rejection

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
    rejection(from_eventgrid(event_id="e1", event_type="Microsoft.ContainerRegistry.ImagePushed",
                             data=data, time=None), message)


def test_event_without_id_is_malformed():
    rejection(from_eventgrid(event_id=None, event_type="x", data={}, time=None),
              "event id must be a non-empty string")


GOOD_DIGEST = "sha256:" + "b" * 64


def pushed(**target):
    return {"target": {"repository": "app", "tag": "1", "digest": GOOD_DIGEST, **target},
            "request": {"host": "r.io"}}


@pytest.mark.parametrize(("event_id", "message"), [
    ({"a": 1}, "non-empty string"),
    (["x"], "non-empty string"),
    (7, "non-empty string"),
    ("x" * 2000, "at most 256"),
    ("a\nb", "printable"),
])
def test_event_ids_that_can_never_be_stored_are_malformed(event_id, message):
    rejection(from_eventgrid(event_id=event_id, event_type="Microsoft.ContainerRegistry.ImagePushed",
                             data=pushed(), time=None), message)
    rejection(from_distribution_envelope({"events": [distribution_event(id=event_id)]}), message)


@pytest.mark.parametrize("digest", ["sha256:xyz", "sha256:" + "B" * 64, "sha256:" + "b" * 63, "md5",
                                    "sha256:" + "b" * 70_000, 12, "SHA256:" + "b" * 64])
def test_digests_outside_the_oci_grammar_are_malformed(digest):
    rejection(from_eventgrid(event_id="e1", event_type="Microsoft.ContainerRegistry.ImagePushed",
                             data=pushed(digest=digest), time=None), "digest")


def test_digests_of_other_algorithms_keep_the_oci_grammar():
    event = from_eventgrid(event_id="e1", event_type="Microsoft.ContainerRegistry.ImagePushed",
                           data=pushed(digest="sha512:" + "c" * 128), time=None)
    assert event.digest == "sha512:" + "c" * 128


@pytest.mark.parametrize(("target", "message"), [
    ({"repository": "r" * 200_000}, "longer than 255"),
    ({"tag": "t" * 129}, "longer than 128"),
    ({"repository": ["x"]}, "must be a string"),
])
def test_oversized_names_are_malformed_before_anything_parses_them(target, message):
    rejection(from_eventgrid(event_id="e1", event_type="Microsoft.ContainerRegistry.ImagePushed",
                             data=pushed(**target), time=None), message)


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
    rejection(from_distribution_envelope(body))
