"""What the poller knows of each base, and of each registry it backs off from."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from shared.domain.vocabulary import Watch, format_time

SCHEMA_VERSION = 2  # 2: base rows in 64 bucket partitions and a sweep row per registry (1: one partition)


@dataclass
class BaseState:
    """One distinct base of the dependency index, as the poller last saw it."""

    base: str
    digest: str | None = None  # the manifest (or index) digest the tag pointed at
    media_type: str | None = None
    platforms: dict[str, str] = field(default_factory=dict)  # an index's platform -> manifest digest
    checked_at: datetime | None = None  # the last check that got an answer
    changed_at: datetime | None = None  # when the poller saw the digest change
    error: str | None = None  # why the last check failed (None when it succeeded)
    error_at: datetime | None = None

    def swept(self, at: datetime | None) -> BaseState:
        """This state with its registry's last sweep applied.

        A poll cycle writes a base's row only when what the base shows changed (its digest, media
        type, platforms or error), and records once per registry when it checked that registry's
        bases (`at`). A base without an error was answered in every such sweep (a failure would
        have written its error), so its last check is the later of its own and the sweep.
        """
        if self.error is None and self.checked_at is not None and at is not None and at > self.checked_at:
            return replace(self, checked_at=at)
        return self

    def same_row(self, other: BaseState | None) -> bool:
        """Whether `other` shows what this state shows, the time of the last check aside (that is
        kept per registry): a row that needs no write."""
        return other is not None and replace(self, checked_at=None) == replace(other, checked_at=None)


@dataclass
class RegistryBackoff:
    """A registry the poller leaves alone until `until` (it asked to slow down, or did not answer)."""

    registry: str
    until: datetime | None = None
    failures: int = 0
    error: str | None = None


@dataclass
class BaseOverview:
    """One line of `basetrigger base list`."""

    base: str
    watch: Watch
    tasks: list[str]
    state: BaseState | None = None

    def to_dict(self) -> dict[str, Any]:
        s = self.state
        return {"base": self.base, "watch": str(self.watch), "polled": self.watch != Watch.EVENTS,
                "digest": s.digest if s else None, "platforms": dict(s.platforms) if s else {},
                "last_checked": format_time(s.checked_at) if s else None,
                "last_changed": format_time(s.changed_at) if s else None,
                "last_error": s.error if s else None,
                "last_error_at": format_time(s.error_at) if s and s.error else None,
                "tasks": list(self.tasks)}


def poll_event_id(base: str, previous: str | None, digest: str) -> str:
    """The id of the event a poll makes of a digest change.

    Derived, so two overlapping poll cycles that both see the change make the same event, and the
    decision log keeps one decision (and one run). The previous digest is part of it: a tag moved
    back to a digest it had before (a rollback) is a new change, not a redelivery of the old one.
    A push notification of the same digest has its sender's id; the dependency index's rules
    (already-triggered, digest-unchanged) keep that to one run.
    """
    material = "\0".join([base, previous or "", digest])
    return "poll-" + hashlib.sha256(material.encode()).hexdigest()[:40]


def error_event_id(base: str, error: str, since: datetime) -> str:
    material = "\0".join([base, error, since.isoformat()])
    return "poll-error-" + hashlib.sha256(material.encode()).hexdigest()[:32]
