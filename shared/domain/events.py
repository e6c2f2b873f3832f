"""Registry push events: the one domain event both ingresses produce.

Event Grid (ACR's `Microsoft.ContainerRegistry.ImagePushed`, Event Grid or CloudEvents schema) and
the CNCF distribution registry's notification envelope are both turned into `ImagePushed`. Anything
else is an `Ignored` (acknowledged and recorded) or raises `MalformedEvent` (the caller's mistake).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.domain.image_ref import ImageRef, InvalidReference, fits_a_key
from shared.domain.platforms import pick
from shared.domain.vocabulary import EventSource, utc_now

IMAGE_PUSHED = "Microsoft.ContainerRegistry.ImagePushed"
# Microsoft's docs samples (and some forwarders) carry the short type name.
IMAGE_PUSHED_TYPES = (IMAGE_PUSHED, "ImagePushed")

# Manifest media types: only a manifest push with a tag names an image that was pushed.
MANIFEST_MEDIA_TYPES = {
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
}


# Limits of what an event may carry. Ids are GUIDs or UUIDs in practice: at most 256 characters,
# and what keys are made of (the id, the pushed reference) must fit a table key once escaped (`%`,
# `/`, `#` take three characters, and a key's 1 KiB is counted in UTF-16): image_ref.fits_a_key.
MAX_EVENT_ID = 256
# distribution/reference: a repository name is at most 255 characters; a tag at most 128.
MAX_REPOSITORY = 255
MAX_TAG = 128
MAX_HOST = 255
# The OCI image spec's digest grammar; the registered algorithms have a fixed hex length.
_DIGEST = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
_DIGEST_HEX = {"sha256": 64, "sha512": 128}
MAX_DIGEST = 7 + 128
_PRINTABLE_ID = 120


class MalformedEvent(ValueError):
    """The payload is not a well-formed event; the sender should not retry it unchanged."""


def printable_id(value: Any) -> str:
    """An event id as a rejection records it: whatever was sent, as a short string."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= _PRINTABLE_ID else text[:_PRINTABLE_ID] + "…"


def check_event_id(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise MalformedEvent("the event id must be a non-empty string")
    if len(value) > MAX_EVENT_ID or not value.isprintable():
        raise MalformedEvent(f"the event id must be at most {MAX_EVENT_ID} printable characters")
    if not fits_a_key(value):
        raise MalformedEvent("the event id is too long for a table key once escaped")
    return value


def check_digest(value: Any) -> str:
    """A content digest (`sha256:<64 hex>`), by the OCI image spec's grammar."""
    if not isinstance(value, str) or len(value) > MAX_DIGEST or not _DIGEST.fullmatch(value):
        raise MalformedEvent(f"{printable_id(value)} is not a digest (algorithm:hex, e.g. sha256:…)")
    algorithm, _, encoded = value.partition(":")
    length = _DIGEST_HEX.get(algorithm)
    if length is not None and not re.fullmatch(f"[a-f0-9]{{{length}}}", encoded):
        raise MalformedEvent(f"a {algorithm} digest is {length} lowercase hex characters")
    return value


def _check_text(value: Any, name: str, limit: int) -> str:
    if not isinstance(value, str):
        raise MalformedEvent(f"{name} must be a string")
    if len(value) > limit:
        raise MalformedEvent(f"{name} is longer than {limit} characters")
    return value


@dataclass(frozen=True)
class ImagePushed:
    event_id: str
    registry: str
    repository: str
    tag: str
    digest: str
    time: datetime
    source: EventSource
    # For a manifest list / OCI index whose entries were read: (platform, manifest digest) pairs, so a
    # task building one platform is compared with that platform's digest (shared.domain.platforms).
    platforms: tuple[tuple[str, str], ...] = ()
    # The pushed manifest's media type, when the event says (an index's platforms can then be read).
    media_type: str | None = None
    # When basetrigger read the event (its delivery, or the poll that saw the digest): with `time`,
    # the start of a wave's patch latency (shared.domain.latency). Not compared: a redelivery is equal.
    received_at: datetime = field(default_factory=utc_now, compare=False)

    def digest_for(self, platform: str | None) -> str:
        """The digest a task building `platform` compares with its own (the pushed digest unless
        the push is an index whose platforms are known)."""
        return (pick(self.platforms, platform) if self.platforms else None) or self.digest

    @property
    def reference(self) -> str:
        """The normalized `registry/repository:tag` that dependents are indexed by; InvalidReference
        when it is none, or one too long to be a table key once escaped (no task can index it)."""
        reference = str(ImageRef.parse(f"{self.registry}/{self.repository}:{self.tag}"))
        if not fits_a_key(reference):
            raise InvalidReference(reference, "too long for a table key once escaped")
        return reference


@dataclass(frozen=True)
class Ignored:
    event_id: str
    reason: str
    source: EventSource


def _parse_time(value: Any) -> datetime:
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


def _require(mapping: Any, key: str, where: str) -> Any:
    if not isinstance(mapping, dict) or mapping.get(key) in (None, ""):
        raise MalformedEvent(f"{where}.{key} is missing")
    return mapping[key]


def _image_pushed(event_id: str, data: dict[str, Any], time: Any, source: EventSource) -> ImagePushed:
    target = _require(data, "target", "data")
    repository = _check_text(_require(target, "repository", "data.target"), "data.target.repository",
                             MAX_REPOSITORY)
    tag = _check_text(_require(target, "tag", "data.target"), "data.target.tag", MAX_TAG)
    digest = check_digest(_require(target, "digest", "data.target"))
    registry = _check_text(_require(data.get("request"), "host", "data.request"), "data.request.host",
                           MAX_HOST)
    event = ImagePushed(
        event_id=event_id,
        registry=registry,
        repository=repository,
        tag=tag,
        digest=digest,
        time=_parse_time(time),
        source=source,
        media_type=target.get("mediaType") if isinstance(target.get("mediaType"), str) else None,
    )
    try:
        event.reference  # noqa: B018 - validates the reference early, with a clear message
    except InvalidReference as exc:
        raise MalformedEvent(f"the pushed image is not a valid reference: {exc}") from exc
    return event


def from_eventgrid(
    *, event_id: Any, event_type: Any, data: Any, time: Any
) -> ImagePushed | Ignored:
    """An Event Grid event (either schema, already decoded into its parts)."""
    event_id = check_event_id(event_id)
    if event_type not in IMAGE_PUSHED_TYPES:
        return Ignored(event_id, f"event type {event_type!r} is not {IMAGE_PUSHED}", EventSource.EVENTGRID)
    if not isinstance(data, dict):
        raise MalformedEvent("the event has no data object")
    target = data.get("target") or {}
    if isinstance(target, dict) and not target.get("tag"):
        return Ignored(event_id, "push by digest without a tag", EventSource.EVENTGRID)
    return _image_pushed(event_id, data, time, EventSource.EVENTGRID)


def from_distribution_envelope(body: Any) -> list[ImagePushed | Ignored]:
    """A CNCF distribution notification envelope: `{"events": [...]}`."""
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
            results.append(
                _image_pushed(event_id, event, event.get("timestamp"), EventSource.DISTRIBUTION)
            )
    return results
