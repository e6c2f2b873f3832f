"""More registries' push notifications, each turned into the one domain event (`ImagePushed`).

- Harbor: the Default payload (`type: PUSH_ARTIFACT`, `event_data.resources[]`) and the CloudEvents
  one (`type: harbor.artifact.pushed`, `data.resources[]`). A push names one artifact under one or
  more tags: one event per tag. The Default payload carries no id, so the id is derived from what
  it says (a redelivery of it is recognised; a new push has a new time or digest).
- Docker Hub: `push_data.tag` and `repository.repo_name`, and no digest: `DockerHubPush` is what the
  payload says; the service layer resolves the digest from the registry before dispatch.
- GitHub Packages: `registry_package` and `package` events, action `published`, container packages
  only; the tag and digest are in `package_version.container_metadata.tag`; the delivery id header
  (`X-GitHub-Delivery`) is the event id.

Every digest goes through `check_digest` and every id through `check_event_id`, as for Event Grid
and distribution events; anything malformed raises `MalformedEvent` (a 400 and a rejected decision).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.domain.credentials import DOCKER_HUB
from shared.domain.events import (
    MAX_HOST,
    MAX_REPOSITORY,
    MAX_TAG,
    Ignored,
    ImagePushed,
    MalformedEvent,
    _check_text,
    _parse_time,
    check_digest,
    check_event_id,
)
from shared.domain.image_ref import ImageRef, InvalidReference
from shared.domain.vocabulary import EventSource

HARBOR_PUSH = "PUSH_ARTIFACT"
HARBOR_CLOUDEVENT_PUSH = "harbor.artifact.pushed"
GITHUB_EVENTS = ("registry_package", "package")
GITHUB_REGISTRY = "ghcr.io"
MAX_RESOURCES = 100


def derived_id(prefix: str, *parts: str) -> str:
    """An event id from what a payload says, for senders whose payloads carry none."""
    return f"{prefix}-" + hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedEvent(f"{where} must be an object")
    return value


def _pushed(event_id: str, registry: str, repository: str, tag: str, digest: Any, time: Any,
            source: EventSource) -> ImagePushed:
    event = ImagePushed(
        event_id=event_id,
        registry=_check_text(registry, "the registry", MAX_HOST),
        repository=_check_text(repository, "the repository", MAX_REPOSITORY),
        tag=_check_text(tag, "the tag", MAX_TAG),
        digest=check_digest(digest),
        time=time if isinstance(time, datetime) else _parse_time(time),
        source=source,
    )
    try:
        event.reference  # noqa: B018 - validates the reference early, with a clear message
    except InvalidReference as exc:
        raise MalformedEvent(f"the pushed image is not a valid reference: {exc}") from exc
    return event


def _unix_time(value: Any) -> datetime:
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 2**33:
        return datetime.fromtimestamp(value, UTC)
    return _parse_time(value)


# ---- Harbor ------------------------------------------------------------------------------------
def from_harbor(body: Any) -> list[ImagePushed | Ignored]:
    """A Harbor webhook body, Default or CloudEvents format."""
    payload = _object(body, "the body")
    if "specversion" in payload:
        event_id = check_event_id(payload.get("id"))
        if payload.get("type") != HARBOR_CLOUDEVENT_PUSH:
            return [Ignored(event_id, f"Harbor event type {payload.get('type')!r} is not a push",
                            EventSource.HARBOR)]
        data = _object(payload.get("data"), "data")
        return _harbor_resources(data, payload.get("time"), lambda tag: f"{event_id}:{tag}")
    kind = payload.get("type")
    data = _object(payload.get("event_data"), "event_data")
    when = _unix_time(payload.get("occur_at"))
    resources = data.get("resources")
    listed: list[Any] = resources if isinstance(resources, list) else []
    base_id = derived_id("harbor", str(kind), str(payload.get("occur_at")),
                         str([(r.get("resource_url"), r.get("digest")) for r in listed
                              if isinstance(r, dict)]))
    if kind != HARBOR_PUSH:
        return [Ignored(base_id, f"Harbor event type {kind!r} is not a push", EventSource.HARBOR)]
    return _harbor_resources(data, when, lambda tag: f"{base_id}:{tag}")


def _harbor_resources(data: dict[str, Any], time: Any, id_for: Any) -> list[ImagePushed | Ignored]:
    resources = data.get("resources")
    if not isinstance(resources, list) or not resources:
        raise MalformedEvent("the Harbor event names no resources")
    if len(resources) > MAX_RESOURCES:
        raise MalformedEvent(f"the Harbor event names more than {MAX_RESOURCES} resources")
    repository = _object(data.get("repository"), "repository")
    full_name = repository.get("repo_full_name")
    results: list[ImagePushed | Ignored] = []
    for index, resource in enumerate(resources):
        resource = _object(resource, f"resources[{index}]")
        tag = resource.get("tag")
        url = resource.get("resource_url")
        if not isinstance(url, str) or "/" not in url:
            raise MalformedEvent(f"resources[{index}].resource_url must be host/project/name:tag")
        event_id = check_event_id(id_for(tag if isinstance(tag, str) else str(index)))
        if not tag:
            results.append(Ignored(event_id, "push by digest without a tag", EventSource.HARBOR))
            continue
        registry = url.split("/", 1)[0]
        name = full_name if isinstance(full_name, str) and full_name else \
            url.split("/", 1)[1].split("@")[0].rsplit(":", 1)[0]
        results.append(_pushed(event_id, registry, name, tag, resource.get("digest"), time,
                               EventSource.HARBOR))
    return results


# ---- Docker Hub ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class DockerHubPush:
    """What a Docker Hub webhook says: a tag was pushed (no digest: it must be read from the registry)."""

    event_id: str
    reference: str
    time: datetime

    def with_digest(self, digest: str) -> ImagePushed:
        ref = ImageRef.parse(self.reference)
        return _pushed(self.event_id, ref.registry, ref.repository, ref.tag or "latest", digest, self.time,
                       EventSource.DOCKERHUB)


def from_dockerhub(body: Any) -> DockerHubPush:
    payload = _object(body, "the body")
    push = _object(payload.get("push_data"), "push_data")
    repository = _object(payload.get("repository"), "repository")
    name = repository.get("repo_name")
    tag = push.get("tag")
    if not isinstance(name, str) or not name:
        raise MalformedEvent("repository.repo_name is missing")
    if not isinstance(tag, str) or not tag:
        raise MalformedEvent("push_data.tag is missing")
    _check_text(name, "repository.repo_name", MAX_REPOSITORY)
    _check_text(tag, "push_data.tag", MAX_TAG)
    try:
        # `node` is docker.io/library/node, as a Dockerfile's FROM reads it.
        reference = str(ImageRef.parse(f"{DOCKER_HUB}/{name}:{tag}"))
    except InvalidReference as exc:
        raise MalformedEvent(f"the pushed image is not a valid reference: {exc}") from exc
    pushed_at = push.get("pushed_at")
    event_id = derived_id("dockerhub", reference, str(pushed_at))
    return DockerHubPush(event_id, reference, _unix_time(pushed_at))


# ---- GitHub Packages -------------------------------------------------------------------------------
def from_github(event_name: Any, delivery: Any, body: Any) -> ImagePushed | Ignored:
    """A GitHub `registry_package` or `package` webhook (headers X-GitHub-Event, X-GitHub-Delivery)."""
    event_id = check_event_id(delivery)
    payload = _object(body, "the body")
    if event_name == "ping":
        return Ignored(event_id, "GitHub's ping: the webhook is set up", EventSource.GITHUB)
    if event_name not in GITHUB_EVENTS:
        return Ignored(event_id, f"GitHub event {event_name!r} is not a package event", EventSource.GITHUB)
    if payload.get("action") != "published":
        return Ignored(event_id, f"action {payload.get('action')!r} is not published", EventSource.GITHUB)
    package = _object(payload.get(event_name), event_name)
    kind = str(package.get("package_type") or package.get("ecosystem") or "").lower()
    if kind != "container":
        return Ignored(event_id, f"package type {kind or 'unknown'!r} is not a container image",
                       EventSource.GITHUB)
    version = _object(package.get("package_version"), f"{event_name}.package_version")
    metadata: dict[str, Any] = version.get("container_metadata") or {}
    if not isinstance(metadata, dict):
        raise MalformedEvent("package_version.container_metadata must be an object")
    tag_info: dict[str, Any] = metadata.get("tag") or {}
    if not isinstance(tag_info, dict):
        raise MalformedEvent("package_version.container_metadata.tag must be an object")
    tag = tag_info.get("name")
    if not tag:
        return Ignored(event_id, "push by digest without a tag", EventSource.GITHUB)
    digest = tag_info.get("digest") or version.get("version") or version.get("name")
    owner = package.get("owner")
    namespace = package.get("namespace") or (owner.get("login") if isinstance(owner, dict) else None)
    name = package.get("name")
    if not isinstance(namespace, str) or not namespace or not isinstance(name, str) or not name:
        raise MalformedEvent(f"{event_name}.namespace and {event_name}.name are required")
    # ghcr.io repositories are lowercase (GitHub lowercases the owner in image names).
    repository = f"{namespace}/{name}".lower()
    return _pushed(event_id, GITHUB_REGISTRY, repository, tag, digest,
                   version.get("updated_at") or version.get("created_at"), EventSource.GITHUB)
