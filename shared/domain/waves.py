"""Waves: everything one base change starts, cascades included, rebuilt in order and once.

A wave is planned when it starts: its members are the tasks that would rebuild, transitively,
each at the level of its longest path from the change, each waiting for the members it is built
FROM. A member is released (its run gets a queue message) when every member it waits for has
succeeded, and only while the wave and the service have capacity; a failure cancels what was built
on it, and the first failures of a wave trip its circuit breaker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.domain import platforms
from shared.domain.vocabulary import RunStatus, WaveState, format_time, utc_now

SCHEMA_VERSION = 2  # 2: a wave's members in 8 bucket partitions (1: one partition, the wave id)


class WaveNotFound(LookupError):
    pass


class WaveConflict(ValueError):
    """The wave is not in a state that allows this (resume a wave that is not held, …)."""


@dataclass(frozen=True)
class Brakes:
    """Caps and the circuit breaker (settings: BASETRIGGER_MAX_RUNNING, BASETRIGGER_WAVE_*)."""

    max_running: int = 8  # builds of all waves running at once
    wave_max_running: int = 4  # builds of one wave running at once
    breaker_first_failures: int = 3  # the first K finished runs of a wave all failed: hold it
    breaker_failure_share: float = 0.5  # or more than this share of its finished runs failed

    def trips(self, finished: int, failed: int) -> bool:
        if failed == 0:
            return False
        if failed >= self.breaker_first_failures and failed == finished:
            return True
        return finished >= self.breaker_first_failures and failed / finished > self.breaker_failure_share


@dataclass(frozen=True)
class PlatformNote:
    """One platform's part of a wave's base change (shared.domain.base_changes.PlatformChange)."""

    classification: str
    digest: str | None  # the platform's manifest digest after the change (None: it was removed)

    def to_record(self) -> dict[str, Any]:
        return {"classification": self.classification, "digest": self.digest}


@dataclass
class Wave:
    wave_id: str
    root: str  # what started it: "<base>@<digest>" or "manual run da5"
    event_id: str | None
    state: WaveState = WaveState.ACTIVE
    levels: int = 1
    # Members by how their runs stand (RunStatus values; "Waiting" for runs not released yet).
    counts: dict[str, int] = field(default_factory=dict)
    reason: str | None = None
    # Finished and failed builds when the wave was last resumed: the breaker counts from there.
    breaker_base: tuple[int, int] = (0, 0)
    created_at: datetime = field(default_factory=utc_now)
    # What the base push changed, in one line that starts with its classification (`identical
    # content`, `metadata only`, `packages`, `os release changed`; shared.domain.base_changes),
    # noted by the wave's first worker. None until then, for a manual run's wave, and on rows
    # stored before this field.
    base_change: str | None = None
    # The same change per platform of the base (platform key -> its classification and its new
    # manifest digest), noted with base_change: a task is judged, and recorded as built on, by its
    # own platform's change. Empty until then, and on rows stored before this field.
    platform_changes: dict[str, PlatformNote] = field(default_factory=dict)
    # For a wave a base push started: when the registry says the base was pushed (or the poll first
    # saw the digest), and when basetrigger received it; created_at is when it was planned. The
    # start of its patch latency (shared.domain.latency). None for other waves and older rows.
    pushed_at: datetime | None = None
    received_at: datetime | None = None
    # A big wave's members not released at once were planned into its backlog (RunBacklog) and
    # are written after its push answered: whoever reads or changes its members records the
    # backlog first, if it is still there (RunLifecycle.members_recorded). Never cleared: the
    # backlog is written before this row and only removed afterwards, so a process that found it
    # gone once needs no look again.
    backlog: bool = False

    def platform_note(self, platform: str | None) -> PlatformNote | None:
        """The change of the platform a task builds (`linux` is linux/amd64). None when that
        platform's change is not noted (not yet, a row stored before this field, or a platform the
        comparison did not cover): then the whole base's line is what there is."""
        try:
            wanted = platforms.key(platform)
        except platforms.InvalidPlatform:
            return None
        return self.platform_changes.get(wanted)

    def to_record(self) -> dict[str, Any]:
        return {"wave_id": self.wave_id, "root": self.root, "event_id": self.event_id,
                "state": str(self.state), "levels": self.levels, "counts": self.counts,
                "reason": self.reason, "breaker_base": list(self.breaker_base),
                "created_at": self.created_at.isoformat(), "base_change": self.base_change,
                "pushed_at": _iso(self.pushed_at), "received_at": _iso(self.received_at),
                "platform_changes": {k: note.to_record() for k, note in self.platform_changes.items()},
                "backlog": self.backlog}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Wave:
        values = dict(record)
        values["platform_changes"] = {k: PlatformNote(**v)
                                      for k, v in (values.get("platform_changes") or {}).items()}
        values["state"] = WaveState(values["state"])
        values["breaker_base"] = tuple(values.get("breaker_base") or (0, 0))
        values["created_at"] = datetime.fromisoformat(values["created_at"])
        for key in ("pushed_at", "received_at"):
            values[key] = datetime.fromisoformat(values[key]) if values.get(key) else None
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        data = self.to_record()
        del data["backlog"]  # bookkeeping, not part of the answer
        for key in ("created_at", "pushed_at", "received_at"):
            data[key] = format_time(getattr(self, key))
        return data


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


@dataclass
class Member:
    """One task of a wave: its run, its level, and the members it waits for / that wait for it."""

    wave_id: str
    task: str
    run_id: str
    level: int
    waits_for: list[str] = field(default_factory=list)
    needed_by: list[str] = field(default_factory=list)
    # The members it waits for that have succeeded (a set in effect: adding twice changes nothing).
    arrived: list[str] = field(default_factory=list)
    released: bool = False
    # How its run ended, once the wave has taken note of it.
    outcome: RunStatus | None = None
    etag: str | None = None

    @property
    def ready(self) -> bool:
        return set(self.waits_for) <= set(self.arrived)

    def to_record(self) -> dict[str, Any]:
        return {"wave_id": self.wave_id, "task": self.task, "run_id": self.run_id, "level": self.level,
                "waits_for": self.waits_for, "needed_by": self.needed_by, "arrived": self.arrived,
                "released": self.released, "outcome": str(self.outcome) if self.outcome else None}

    @classmethod
    def from_record(cls, record: dict[str, Any], etag: str | None = None) -> Member:
        values = dict(record)
        values["outcome"] = RunStatus(values["outcome"]) if values.get("outcome") else None
        return cls(**values, etag=etag)
