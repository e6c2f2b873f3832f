"""Harbor's webhooks: the Default payload (`type: PUSH_ARTIFACT`, `event_data.resources[]`) and the
CloudEvents one (`type: harbor.artifact.pushed`, `data.resources[]`).

A push names one artifact under one or more tags: one event per tag. The Default payload carries no
id, so the id is derived from what it says (a redelivery of it is recognised; a new push has a new
time or digest).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shared.adapters.ingress.fields import derived_id, json_object, parse_time, pushed_image, unix_time
from shared.domain.events import Ignored, ImagePushed, MalformedEvent, Rejected, check_event_id
from shared.domain.vocabulary import EventSource

HARBOR_PUSH = "PUSH_ARTIFACT"
HARBOR_CLOUDEVENT_PUSH = "harbor.artifact.pushed"
MAX_RESOURCES = 100
# The id a rejected payload is recorded under when it names none that can be read.
PAYLOAD_ID = "(harbor payload)"


def from_harbor(body: Any) -> list[ImagePushed | Ignored] | Rejected:
    """A Harbor webhook body, Default or CloudEvents format (one event per tag pushed); one
    Rejected for the whole body when any part of it cannot be read."""
    try:
        return _read(body)
    except MalformedEvent as exc:
        return Rejected(PAYLOAD_ID, str(exc), EventSource.HARBOR)


def _read(body: Any) -> list[ImagePushed | Ignored]:
    payload = json_object(body, "the body")
    if "specversion" in payload:
        event_id = check_event_id(payload.get("id"))
        if payload.get("type") != HARBOR_CLOUDEVENT_PUSH:
            return [Ignored(event_id, f"Harbor event type {payload.get('type')!r} is not a push",
                            EventSource.HARBOR)]
        data = json_object(payload.get("data"), "data")
        return _resources(data, payload.get("time"), lambda tag: f"{event_id}:{tag}")
    kind = payload.get("type")
    data = json_object(payload.get("event_data"), "event_data")
    when = unix_time(payload.get("occur_at"))
    resources = data.get("resources")
    listed: list[Any] = resources if isinstance(resources, list) else []
    base_id = derived_id("harbor", str(kind), str(payload.get("occur_at")),
                         str([(r.get("resource_url"), r.get("digest")) for r in listed
                              if isinstance(r, dict)]))
    if kind != HARBOR_PUSH:
        return [Ignored(base_id, f"Harbor event type {kind!r} is not a push", EventSource.HARBOR)]
    return _resources(data, when, lambda tag: f"{base_id}:{tag}")


def _resources(data: dict[str, Any], time: Any, id_for: Callable[[str], str]) -> list[ImagePushed | Ignored]:
    resources = data.get("resources")
    if not isinstance(resources, list) or not resources:
        raise MalformedEvent("the Harbor event names no resources")
    if len(resources) > MAX_RESOURCES:
        raise MalformedEvent(f"the Harbor event names more than {MAX_RESOURCES} resources")
    repository = json_object(data.get("repository"), "repository")
    full_name = repository.get("repo_full_name")
    when = parse_time(time)
    results: list[ImagePushed | Ignored] = []
    for index, resource in enumerate(resources):
        resource = json_object(resource, f"resources[{index}]")
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
        results.append(pushed_image(event_id, registry, name, tag, resource.get("digest"), when,
                                    EventSource.HARBOR))
    return results
