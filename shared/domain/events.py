"""What arrives from a registry, as the service layer receives it, whoever sent it.

Every ingress (shared/adapters/ingress/: Event Grid, the CNCF distribution registry, Harbor, Docker
Hub, GitHub Packages), the poller and `base rebuild` hand the service layer one of these:
- `ImagePushed`: a tag now points at a digest;
- `TagPushed`: a tag was pushed, its digest still to be read (Docker Hub's payload names none);
- `Ignored`: an event no rule acts on (acknowledged and recorded);
- `Rejected`: a payload that cannot be read (the sender's mistake: a 400, recorded, never dispatched).
The checks every ingress applies to ids and digests are here too; payload formats are not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.domain.image_ref import ImageRef, InvalidReference, fits_a_key
from shared.domain.platforms import pick
from shared.domain.vocabulary import EventSource, utc_now

# Limits of what an event may carry. Ids are GUIDs or UUIDs in practice: at most 256 characters,
# and what keys are made of (the id, the pushed reference) must fit a table key once escaped (`%`,
# `/`, `#` take three characters, and a key's 1 KiB is counted in UTF-16): image_ref.fits_a_key.
MAX_EVENT_ID = 256
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
    def name(self) -> str:
        """The normalized `registry/repository`, whatever the tag and digest: dispatch holds it
        while it dispatches a push of it, so the pushes of one base go one at a time (every tag,
        every digest; shared.service_layer.dispatch)."""
        return ImageRef.parse(self.reference).name

    @property
    def content(self) -> str:
        """`registry/repository@digest`: what was pushed, whatever tag named it. The deliveries of
        one push under several tags (`1.2` and `latest`) share it, and fold into one wave."""
        return f"{self.name}@{self.digest}"

    @property
    def reference(self) -> str:
        """The normalized `registry/repository:tag` that dependents are indexed by; InvalidReference
        when it is none, or one too long to be a table key once escaped (no task can index it)."""
        reference = str(ImageRef.parse(f"{self.registry}/{self.repository}:{self.tag}"))
        if not fits_a_key(reference):
            raise InvalidReference(reference, "too long for a table key once escaped")
        return reference


def pushed_content(cause: str | None) -> str | None:
    """The `registry/repository@digest` of a run's cause or a wave's root that names a base push
    (`registry/repository:tag@digest`); None for any other (a manual run's, a deeper member's
    `... (wave w7)`)."""
    if not cause or " " in cause:
        return None
    image, at, digest = cause.rpartition("@")
    if not at or not digest:
        return None
    try:
        return f"{ImageRef.parse(image).name}@{digest}"
    except InvalidReference:
        return None


@dataclass(frozen=True)
class Ignored:
    event_id: str
    reason: str
    source: EventSource


@dataclass(frozen=True)
class Rejected:
    """A payload that cannot be read: why, and the event id it claimed (or a stand-in naming the
    payload, e.g. `(envelope)`, when it has none that can be told)."""

    event_id: str
    reason: str
    source: EventSource


@dataclass(frozen=True)
class TagPushed:
    """A push that names its tag but no digest (Docker Hub's webhook): the digest is read from the
    registry before dispatch (shared.service_layer.ingest)."""

    event_id: str
    reference: str
    time: datetime
    source: EventSource

    def with_digest(self, digest: str, media_type: str | None = None,
                    platforms: tuple[tuple[str, str], ...] = ()) -> ImagePushed:
        ref = ImageRef.parse(self.reference)
        return ImagePushed(self.event_id, ref.registry, ref.repository, ref.tag or "latest",
                           check_digest(digest), self.time, self.source, platforms, media_type)


# What the service layer receives (shared.service_layer.ingest.Ingest.receive).
Arrival = ImagePushed | TagPushed | Ignored | Rejected

