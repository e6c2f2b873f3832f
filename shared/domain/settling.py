"""Settle windows: a base whose digest keeps moving starts one wave, once it has been still for a while.

Multi-platform bases move several times within minutes as their architectures land, and some
registries notify once per platform or per tag. With a settle window of N seconds for a base's
registry (BASETRIGGER_SETTLE_SECONDS), a push is not dispatched at once: the base is noted as
settling on its newest digest, the push is decided `settling until <time>`, and every later push
within the window moves that digest and the time (a push of the digest it already has moves
nothing: a redelivery or another platform's or tag's notification of the same push). Once the base
has been still for N seconds, one event for its newest digest is dispatched (`Settling.event`): its
id is made from the reference and the digest, so a second pass or a redelivery of it is the same
event, decided once.

BASETRIGGER_SETTLE_SECONDS: a number of seconds for every registry (default 0: dispatched at once),
then optionally `registry=seconds` pairs, comma-separated, first match wins; a registry may start
with `*.` to match a domain: `0,registry-1.docker.io=900,*.azurecr.io=120`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from shared.domain.credentials import CredentialError, normalize_login_server
from shared.domain.events import ImagePushed
from shared.domain.vocabulary import EventSource, format_time

# Longer than a day is a mistake rather than a window (a base would look forgotten).
MAX_SETTLE_SECONDS = 24 * 3600
SCHEMA_VERSION = 1


class SettleError(ValueError):
    pass


class SettlingConflict(RuntimeError):
    """The base's settling row changed since it was read (another push of it): read it again."""


def _seconds(text: str, where: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise SettleError(f"BASETRIGGER_SETTLE_SECONDS: {where} is not a whole number of seconds") from None
    if not 0 <= value <= MAX_SETTLE_SECONDS:
        raise SettleError(f"BASETRIGGER_SETTLE_SECONDS: {where} must be between 0 and {MAX_SETTLE_SECONDS}")
    return value


@dataclass(frozen=True)
class SettleSettings:
    default_seconds: int = 0
    rules: tuple[tuple[str, int], ...] = ()

    def seconds_for(self, registry: str) -> int:
        try:
            host = normalize_login_server(registry)  # as the rules are: registry-1.docker.io is docker.io
        except CredentialError:
            host = registry.lower()
        for pattern, seconds in self.rules:
            if host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:])):
                return seconds
        return self.default_seconds

    @classmethod
    def parse(cls, text: str) -> SettleSettings:
        """`N` or `N,host=M,*.domain=M` or `host=M` (the default is then 0)."""
        default = 0
        rules: list[tuple[str, int]] = []
        seen_default = False
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            pattern, sep, value = item.partition("=")
            if not sep:
                if seen_default:
                    raise SettleError("BASETRIGGER_SETTLE_SECONDS: name the default only once")
                default, seen_default = _seconds(item, repr(item)), True
                continue
            pattern = pattern.strip().lower()
            try:
                host = normalize_login_server(pattern[2:] if pattern.startswith("*.") else pattern)
            except CredentialError as exc:
                raise SettleError(f"BASETRIGGER_SETTLE_SECONDS: {exc}") from None
            rules.append(("*." + host if pattern.startswith("*.") else host, _seconds(value, repr(item))))
        return cls(default, tuple(rules))


@dataclass
class Settling:
    """A base that moved and has not been dispatched yet: its newest digest and when it last moved."""

    reference: str  # registry/repository:tag, as dependents are indexed
    registry: str
    repository: str
    tag: str
    digest: str
    moved_at: datetime
    source: EventSource
    platforms: tuple[tuple[str, str], ...] = ()
    media_type: str | None = None
    # Deliveries folded into this one (pushes of new digests, notifications of the same one).
    deliveries: int = 1
    etag: str | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, event: ImagePushed, now: datetime) -> Settling:
        return cls(event.reference, event.registry, event.repository, event.tag, event.digest, now,
                   event.source, event.platforms, event.media_type)

    def moved(self, event: ImagePushed, now: datetime) -> Settling:
        """This base after `event`: a new digest moves it (the window starts again); the digest it
        has moves nothing, though its platforms are kept if this delivery read them."""
        if event.digest != self.digest:
            return Settling(self.reference, self.registry, self.repository, self.tag, event.digest, now,
                            event.source, event.platforms, event.media_type, self.deliveries + 1, self.etag)
        return Settling(self.reference, self.registry, self.repository, self.tag, self.digest,
                        self.moved_at, self.source, self.platforms or event.platforms,
                        self.media_type or event.media_type, self.deliveries + 1, self.etag)

    def due(self, seconds: int) -> datetime:
        return self.moved_at + timedelta(seconds=seconds)

    @property
    def event_id(self) -> str:
        """One id per base, digest and the moment it moved there: whoever dispatches the settled
        push, it is decided once; a base that later moves back to this digest is a new event."""
        key = f"{self.reference}@{self.digest}@{format_time(self.moved_at)}"
        return "settled-" + hashlib.sha256(key.encode()).hexdigest()[:40]

    def event(self, now: datetime) -> ImagePushed:
        return ImagePushed(self.event_id, self.registry, self.repository, self.tag, self.digest, now,
                           self.source, self.platforms, self.media_type)

    def to_record(self) -> dict[str, Any]:
        return {"reference": self.reference, "registry": self.registry, "repository": self.repository,
                "tag": self.tag, "digest": self.digest, "moved_at": format_time(self.moved_at),
                "source": str(self.source), "platforms": [list(p) for p in self.platforms],
                "media_type": self.media_type, "deliveries": self.deliveries}

    @classmethod
    def from_record(cls, record: dict[str, Any], etag: str | None = None) -> Settling:
        return cls(record["reference"], record["registry"], record["repository"], record["tag"],
                   record["digest"], datetime.fromisoformat(record["moved_at"].replace("Z", "+00:00")),
                   EventSource(record["source"]),
                   tuple((str(p), str(d)) for p, d in record.get("platforms") or []),
                   record.get("media_type"), int(record.get("deliveries") or 1), etag)
