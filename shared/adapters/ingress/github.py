"""GitHub Packages' webhooks: `registry_package` and `package` events, action `published`, container
packages only. The tag and digest are in `package_version.container_metadata.tag`; the delivery id
header (`X-GitHub-Delivery`) is the event id. (A repository's `push` and `pull_request` events, on
the same route, are source triggers: shared.adapters.ingress.git_sources.)"""

from __future__ import annotations

from typing import Any

from shared.adapters.ingress.fields import json_object, parse_time, pushed_image
from shared.domain.events import (
    Ignored,
    ImagePushed,
    MalformedEvent,
    Rejected,
    check_event_id,
    printable_id,
)
from shared.domain.vocabulary import EventSource

GITHUB_EVENTS = ("registry_package", "package")
GITHUB_REGISTRY = "ghcr.io"


def from_github(event_name: Any, delivery: Any, body: Any) -> ImagePushed | Ignored | Rejected:
    """A GitHub `registry_package` or `package` webhook (headers X-GitHub-Event, X-GitHub-Delivery)."""
    try:
        return _read(event_name, delivery, body)
    except MalformedEvent as exc:
        return Rejected(printable_id(delivery or "(github payload)"), str(exc), EventSource.GITHUB)


def _read(event_name: Any, delivery: Any, body: Any) -> ImagePushed | Ignored:
    event_id = check_event_id(delivery)
    payload = json_object(body, "the body")
    if event_name == "ping":
        return Ignored(event_id, "GitHub's ping: the webhook is set up", EventSource.GITHUB)
    if event_name not in GITHUB_EVENTS:
        return Ignored(event_id, f"GitHub event {event_name!r} is not a package event", EventSource.GITHUB)
    if payload.get("action") != "published":
        return Ignored(event_id, f"action {payload.get('action')!r} is not published", EventSource.GITHUB)
    package = json_object(payload.get(event_name), event_name)
    kind = str(package.get("package_type") or package.get("ecosystem") or "").lower()
    if kind != "container":
        return Ignored(event_id, f"package type {kind or 'unknown'!r} is not a container image",
                       EventSource.GITHUB)
    version = json_object(package.get("package_version"), f"{event_name}.package_version")
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
    return pushed_image(event_id, GITHUB_REGISTRY, repository, tag, digest,
                        parse_time(version.get("updated_at") or version.get("created_at")),
                        EventSource.GITHUB)
