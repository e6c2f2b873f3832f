"""Quarantine: a base digest nothing may be built on, with the reason, until it is released.

A digest names content, so a quarantined digest blocks wherever it appears: a push of it under any
tag, a `base rebuild` on it, a manual run of a task whose base points at it now, for tasks that
exist and tasks added later. The decision or answer that blocks says `quarantined: <reason>`.
Set by a person (`basetrigger base quarantine IMAGE@DIGEST --reason …`) or by a wave's circuit
breaker (the digest the held wave was on, with the breaker's reason); lifted by `base release`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.domain.events import MalformedEvent, check_digest
from shared.domain.image_ref import ImageRef, InvalidReference
from shared.domain.vocabulary import format_time, utc_now

MAX_REASON_CHARS = 500


class InvalidQuarantine(ValueError):
    """Not IMAGE@DIGEST, or no reason: the caller's mistake (400)."""


class NotQuarantined(LookupError):
    """`base release` of a digest that is not quarantined (404)."""


class Quarantined(RuntimeError):
    """A run that would build on a quarantined digest (409); str() is `quarantined: <reason>`."""

    def __init__(self, entry: QuarantineEntry):
        super().__init__(entry.decision)
        self.entry = entry


@dataclass
class QuarantineEntry:
    digest: str
    image: str  # the reference it was quarantined as (any tag of the digest is blocked)
    reason: str
    by: str = "manual"  # "manual", or "breaker of wave w12"
    since: datetime = field(default_factory=utc_now)

    @property
    def decision(self) -> str:
        return f"quarantined: {self.reason}"

    def to_record(self) -> dict[str, Any]:
        return {"digest": self.digest, "image": self.image, "reason": self.reason, "by": self.by,
                "since": self.since.isoformat()}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> QuarantineEntry:
        values = dict(record)
        values["since"] = datetime.fromisoformat(values["since"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {**self.to_record(), "since": format_time(self.since)}


def parse_target(text: Any) -> tuple[str, str]:
    """(image without digest, digest) of `IMAGE@DIGEST`; InvalidQuarantine otherwise."""
    if not isinstance(text, str) or not text:
        raise InvalidQuarantine("name the base as IMAGE@DIGEST, e.g. node:20@sha256:…")
    try:
        ref = ImageRef.parse(text)
        digest = check_digest(ref.digest or "")
    except (InvalidReference, MalformedEvent) as exc:
        raise InvalidQuarantine(f"{text!r} is not IMAGE@DIGEST: {exc}") from None
    return f"{ref.name}:{ref.tag}" if ref.tag else ref.name, digest


def check_reason(reason: Any) -> str:
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidQuarantine("a quarantine needs a reason (--reason …): it is what blocked runs say")
    line: str = " ".join(reason.split())  # one line: it goes into decisions and log lines
    if len(line) > MAX_REASON_CHARS:
        raise InvalidQuarantine(f"the reason is longer than {MAX_REASON_CHARS} characters")
    return line
