"""The CNCF distribution registry's notifications: an envelope `{"events": [...]}` of pushes, pulls
and mounts; only a manifest push with a tag names an image that was pushed."""

from __future__ import annotations

from typing import Any

from shared.adapters.ingress.fields import from_target
from shared.domain.events import Ignored, ImagePushed, MalformedEvent, Rejected, check_event_id
from shared.domain.vocabulary import EventSource

# The id a rejected envelope is recorded under: an envelope has none of its own.
ENVELOPE_ID = "(envelope)"

# Manifest media types: only a manifest push with a tag names an image that was pushed.
MANIFEST_MEDIA_TYPES = {
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
}


def from_distribution_envelope(body: Any) -> list[ImagePushed | Ignored] | Rejected:
    """Each event of the envelope; one Rejected for the whole envelope when any event cannot be read
    (the registry sends the envelope again as it was: a partial answer would help nobody)."""
    try:
        return _read(body)
    except MalformedEvent as exc:
        return Rejected(ENVELOPE_ID, str(exc), EventSource.DISTRIBUTION)


def _read(body: Any) -> list[ImagePushed | Ignored]:
    if not isinstance(body, dict) or not isinstance(body.get("events"), list):
        raise MalformedEvent('expected a JSON object with an "events" array')
    results: list[ImagePushed | Ignored] = []
    for index, event in enumerate(body["events"]):
        if not isinstance(event, dict):
            raise MalformedEvent(f"events[{index}] is not an object")
        try:
            event_id = check_event_id(event.get("id"))
        except MalformedEvent as exc:
            raise MalformedEvent(f"events[{index}]: {exc}") from None
        action = event.get("action")
        target: dict[str, Any] = event["target"] if isinstance(event.get("target"), dict) else {}
        if action != "push":
            results.append(Ignored(event_id, f"action {action!r} is not a push", EventSource.DISTRIBUTION))
        elif not isinstance(target.get("mediaType"), str) or target["mediaType"] not in MANIFEST_MEDIA_TYPES:
            results.append(Ignored(event_id, "blob push, not a manifest", EventSource.DISTRIBUTION))
        elif not target.get("tag"):
            results.append(Ignored(event_id, "manifest push without a tag", EventSource.DISTRIBUTION))
        else:
            results.append(from_target(event_id, event, event.get("timestamp"), EventSource.DISTRIBUTION))
    return results
