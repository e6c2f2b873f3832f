"""The published payload shapes of each webhook (tests/samples), parsed into the one domain event."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from shared.adapters.ingress.dockerhub import from_dockerhub
from shared.adapters.ingress.eventgrid import from_eventgrid
from shared.adapters.ingress.github import from_github
from shared.adapters.ingress.harbor import from_harbor
from shared.domain.events import Ignored, ImagePushed, MalformedEvent
from shared.domain.vocabulary import EventSource
from tests.rejections import rejection

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def sample(name: str):
    return json.loads((SAMPLES / name).read_text())


def test_harbor_default_payload():
    (event,) = from_harbor(sample("harbor-push-default.json"))
    assert isinstance(event, ImagePushed) and event.source == EventSource.HARBOR
    assert event.reference == "harbor.example.com/library/node:20-alpine"
    assert event.digest.startswith("sha256:8a3c1e5d")
    # No id in the payload: derived, so a redelivery of the same payload is the same event.
    (again,) = from_harbor(sample("harbor-push-default.json"))
    assert again.event_id == event.event_id and event.event_id.startswith("harbor-")


def test_harbor_cloudevents_payload():
    (event,) = from_harbor(sample("harbor-push-cloudevents.json"))
    assert isinstance(event, ImagePushed)
    assert event.reference == "harbor.example.com/base/alpine:3.19"
    assert event.event_id == "4b1f0c2e-7a3d-4e5f-9b8c-1d2e3f4a5b6c:3.19"
    assert event.time.year == 2026


def test_harbor_other_events_are_ignored_and_bad_digests_refused():
    pulled = sample("harbor-push-default.json") | {"type": "PULL_ARTIFACT"}
    assert isinstance(from_harbor(pulled)[0], Ignored)
    bad = sample("harbor-push-cloudevents.json")
    bad["data"]["resources"][0]["digest"] = "sha256:xyz"
    rejection(from_harbor(bad), "digest")


def test_dockerhub_payload_names_the_tag_and_no_digest():
    push = from_dockerhub(sample("dockerhub-push.json"))
    assert push.reference == "docker.io/example/node-base:20-alpine"
    event = push.with_digest("sha256:" + "ab" * 32)
    assert event.source == EventSource.DOCKERHUB and event.reference == push.reference
    official = copy.deepcopy(sample("dockerhub-push.json"))
    official["repository"]["repo_name"] = "node"
    assert from_dockerhub(official).reference == "docker.io/library/node:20-alpine"
    with pytest.raises(MalformedEvent):
        push.with_digest("sha256:xyz")


@pytest.mark.parametrize(("kind", "name", "tag"), [
    ("registry_package", "github-registry-package-published.json", "1.4"),
    ("package", "github-package-published.json", "latest"),
])
def test_github_package_events(kind, name, tag):
    event = from_github(kind, "72d3162e-cc78-11e3-81ab-4c9367dc0958", sample(name))
    assert isinstance(event, ImagePushed) and event.source == EventSource.GITHUB
    assert event.reference == f"ghcr.io/octo-org/base-image:{tag}"
    assert event.event_id == "72d3162e-cc78-11e3-81ab-4c9367dc0958"


def test_github_events_that_are_not_container_pushes_are_ignored():
    body = sample("github-package-published.json")
    assert isinstance(from_github("push", "d1", body), Ignored)
    assert isinstance(from_github("package", "d2", body | {"action": "updated"}), Ignored)
    npm = copy.deepcopy(body)
    npm["package"]["package_type"] = "npm"
    assert isinstance(from_github("package", "d3", npm), Ignored)
    untagged = copy.deepcopy(body)
    untagged["package"]["package_version"]["container_metadata"]["tag"]["name"] = ""
    assert isinstance(from_github("package", "d4", untagged), Ignored)
    rejection(from_github("package", "", body))  # no delivery id


def test_the_short_event_grid_type_name_is_an_image_push():
    (event,) = sample("acr-imagepushed-short-type.json")
    pushed = from_eventgrid(event_id=event["id"], event_type=event["eventType"], data=event["data"],
                            time=event["eventTime"])
    assert isinstance(pushed, ImagePushed) and pushed.reference.startswith("jolovcr.azurecr.io/samples/nginx")
