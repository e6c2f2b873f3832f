"""Reading the parts of a payload, for every ingress parser: each raises MalformedEvent naming the
part that is missing or wrong; a parser turns that into a `Rejected` at its top."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from shared.domain.events import ImagePushed, MalformedEvent, check_digest
from shared.domain.image_ref import InvalidReference
from shared.domain.vocabulary import EventSource

# distribution/reference: a repository name is at most 255 characters; a tag at most 128.
MAX_REPOSITORY = 255
MAX_TAG = 128
MAX_HOST = 255


def parse_time(value: Any) -> datetime:
    """An event's time: ISO 8601 (Event Grid's 7 fractional digits too); now when none is given."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and value:
        text = value.replace("Z", "+00:00")
        # Event Grid sends 7 fractional digits; fromisoformat accepts at most 6.
        if "." in text:
            head, rest = text.split(".", 1)
            frac = "".join(ch for ch in rest if ch.isdigit())
            tz = rest[len(frac):]
            text = f"{head}.{frac[:6]}{tz}"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError as exc:
            raise MalformedEvent(f"invalid event time {value!r}") from exc
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return datetime.now(UTC)


def unix_time(value: Any) -> datetime:
    """Seconds since the epoch (Harbor, Docker Hub), or what parse_time reads."""
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 2**33:
        return datetime.fromtimestamp(value, UTC)
    return parse_time(value)


def require(mapping: Any, key: str, where: str) -> Any:
    if not isinstance(mapping, dict) or mapping.get(key) in (None, ""):
        raise MalformedEvent(f"{where}.{key} is missing")
    return mapping[key]


def json_object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedEvent(f"{where} must be an object")
    return value


def derived_id(prefix: str, *parts: str) -> str:
    """An event id from what a payload says, for senders whose payloads carry none."""
    return f"{prefix}-" + hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def from_target(event_id: str, data: dict[str, Any], time: Any, source: EventSource) -> ImagePushed:
    """The push that an event's `target` and `request` name: ACR's Event Grid data and a distribution
    registry's event share that shape (`target.repository|tag|digest|mediaType`, `request.host`)."""
    target = require(data, "target", "data")
    repository = check_text(require(target, "repository", "data.target"), "data.target.repository",
                            MAX_REPOSITORY)
    tag = check_text(require(target, "tag", "data.target"), "data.target.tag", MAX_TAG)
    digest = check_digest(require(target, "digest", "data.target"))
    registry = check_text(require(data.get("request"), "host", "data.request"), "data.request.host",
                          MAX_HOST)
    media_type = target.get("mediaType") if isinstance(target.get("mediaType"), str) else None
    return pushed_image(event_id, registry, repository, tag, digest, parse_time(time), source, media_type)


def check_text(value: Any, name: str, limit: int) -> str:
    if not isinstance(value, str):
        raise MalformedEvent(f"{name} must be a string")
    if len(value) > limit:
        raise MalformedEvent(f"{name} is longer than {limit} characters")
    return value


def pushed_image(event_id: str, registry: Any, repository: Any, tag: Any, digest: Any, time: datetime,
                 source: EventSource, media_type: str | None = None) -> ImagePushed:
    """An ImagePushed from what a payload says, each part checked: MalformedEvent names the first
    part that is not what a push can be."""
    event = ImagePushed(
        event_id=event_id,
        registry=check_text(registry, "the registry", MAX_HOST),
        repository=check_text(repository, "the repository", MAX_REPOSITORY),
        tag=check_text(tag, "the tag", MAX_TAG),
        digest=check_digest(digest),
        time=time,
        source=source,
        media_type=media_type,
    )
    try:
        event.reference  # noqa: B018 - validates the reference early, with a clear message
    except InvalidReference as exc:
        raise MalformedEvent(f"the pushed image is not a valid reference: {exc}") from exc
    return event
