"""ACR's pushes through Event Grid: `Microsoft.ContainerRegistry.ImagePushed`, in the Event Grid or
the CloudEvents schema (the trigger binding decodes either into id, type, data and time)."""

from __future__ import annotations

from typing import Any

from shared.adapters.ingress.fields import from_target
from shared.domain.events import Ignored, ImagePushed, MalformedEvent, Rejected, check_event_id, printable_id
from shared.domain.vocabulary import EventSource

IMAGE_PUSHED = "Microsoft.ContainerRegistry.ImagePushed"
# Microsoft's docs samples (and some forwarders) carry the short type name.
IMAGE_PUSHED_TYPES = (IMAGE_PUSHED, "ImagePushed")


def from_eventgrid(*, event_id: Any, event_type: Any, data: Any,
                   time: Any) -> ImagePushed | Ignored | Rejected:
    """An Event Grid event (either schema, already decoded into its parts)."""
    try:
        return _read(event_id, event_type, data, time)
    except MalformedEvent as exc:
        return Rejected(printable_id(event_id), str(exc), EventSource.EVENTGRID)


def _read(event_id: Any, event_type: Any, data: Any, time: Any) -> ImagePushed | Ignored:
    event_id = check_event_id(event_id)
    if event_type not in IMAGE_PUSHED_TYPES:
        return Ignored(event_id, f"event type {event_type!r} is not {IMAGE_PUSHED}", EventSource.EVENTGRID)
    if not isinstance(data, dict):
        raise MalformedEvent("the event has no data object")
    target = data.get("target") or {}
    if isinstance(target, dict) and not target.get("tag"):
        return Ignored(event_id, "push by digest without a tag", EventSource.EVENTGRID)
    return from_target(event_id, data, time, EventSource.EVENTGRID)
