"""Patch latency: how long a base push took to reach every image built on it ("how long were we
exposed?"), per base event, per base, and overall, against a service-level objective.

One base event is one wave a base push started (shared.domain.waves). Its timestamps:
- pushed:   the registry's event time, or the time a poll first saw the digest (Wave.pushed_at);
- received: when basetrigger read the event (Wave.received_at);
- planned:  when its wave was planned (Wave.created_at);
and for each dependent (each member of the wave, cascades included) its run's queued (created_at),
started, built and pushed times (shared.domain.runs.Run).

An event's latency runs from its push to the last dependent pushed. It is known once every
dependent's run has ended; an event with a dependent still queued or building is `open`, and its
exposure so far (now - pushed) is what it reports. A dependent that ended without pushing (failed,
canceled, held) leaves its image on the old base: it misses the objective, whatever the others did.
p50 and p95 are nearest-rank percentiles of the closed events' latencies; the worst case is the
largest latency or open exposure.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from shared.domain.runs import Run
from shared.domain.vocabulary import RunStatus, format_time
from shared.domain.waves import Wave

DEFAULT_SINCE = timedelta(days=7)
DEFAULT_SLO = timedelta(hours=12)
# Older than this is not asked for: waves are read newest first, and a report must stay bounded.
MAX_SINCE = timedelta(days=90)
_DURATION = re.compile(r"(\d{1,6})([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class InvalidDuration(ValueError):
    """A `since` or `slo` that is not a duration like 90s, 30m, 12h, 7d, 1w, 1d12h (400)."""


def parse_duration(text: Any, name: str, default: timedelta, limit: timedelta = MAX_SINCE) -> timedelta:
    """`12h`, `7d`, `1d12h`, …; `default` when empty. InvalidDuration otherwise."""
    if text is None or text == "":
        return default
    if not isinstance(text, str):
        raise InvalidDuration(f"{name} must be a duration like 12h or 7d")
    spec = text.strip().lower()
    parts = _DURATION.findall(spec)
    if not parts or "".join(n + u for n, u in parts) != spec:
        raise InvalidDuration(f"{name}={text!r} is not a duration: use a number and a unit, "
                              "s, m, h, d or w (90s, 30m, 12h, 7d, 1d12h)")
    value = timedelta(seconds=sum(int(n) * _UNIT_SECONDS[u] for n, u in parts))
    if value <= timedelta(0):
        raise InvalidDuration(f"{name} must be longer than 0")
    if value > limit:
        raise InvalidDuration(f"{name} may be at most {limit.days} days")
    return value


def percentile(values: list[float], share: float) -> float | None:
    """The nearest-rank percentile (an observed value, never an interpolation); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


@dataclass
class DependentTimes:
    """One dependent of a base event: its run and the moments it went through."""

    task: str
    run_id: str
    status: RunStatus
    queued: datetime
    started: datetime | None
    built: datetime | None
    pushed: datetime | None
    images: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, task: str, run: Run) -> DependentTimes:
        return cls(task, run.run_id, run.status, run.created_at, run.started_at,
                   run.built_at or (run.finished_at if run.pushed_at else None), run.pushed_at,
                   list(run.output_images))

    @property
    def ended(self) -> bool:
        return self.status.terminal

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "run_id": self.run_id, "status": str(self.status),
                "queued": format_time(self.queued), "started": format_time(self.started),
                "built": format_time(self.built), "pushed": format_time(self.pushed),
                "images": self.images}


@dataclass
class BaseEvent:
    """One base push and what it rebuilt (one wave)."""

    wave_id: str
    base: str
    digest: str
    pushed: datetime
    received: datetime | None
    planned: datetime
    dependents: list[DependentTimes]

    @property
    def open(self) -> bool:
        return any(not d.ended for d in self.dependents)

    @property
    def last_pushed(self) -> datetime | None:
        return max((d.pushed for d in self.dependents if d.pushed), default=None)

    def latency(self) -> timedelta | None:
        """Push to the last dependent pushed; None while a dependent is still on its way, or when
        none pushed."""
        last = self.last_pushed
        return None if self.open or last is None else max(timedelta(0), last - self.pushed)

    def exposure(self, now: datetime) -> timedelta:
        """How long the event took (its latency), or, while open, how long it has been going."""
        end = now if self.open else (self.last_pushed or self.pushed)
        return max(timedelta(0), end - self.pushed)

    def to_dict(self, now: datetime) -> dict[str, Any]:
        latency = self.latency()
        return {"wave_id": self.wave_id, "base": self.base, "digest": self.digest,
                "pushed": format_time(self.pushed), "received": format_time(self.received),
                "planned": format_time(self.planned), "last_pushed": format_time(self.last_pushed),
                "open": self.open,
                "latency_seconds": latency.total_seconds() if latency is not None else None,
                "exposure_seconds": self.exposure(now).total_seconds(),
                "dependents": [d.to_dict() for d in self.dependents]}


def base_event(wave: Wave, runs: Iterable[tuple[str, Run]]) -> BaseEvent | None:
    """The base event of a wave a base push started (None for a manual run's wave, or one stored
    before the push time was kept)."""
    base, sep, digest = wave.root.partition("@")
    if not sep or wave.pushed_at is None or " " in base:
        return None
    return BaseEvent(wave.wave_id, base, digest, wave.pushed_at, wave.received_at, wave.created_at,
                     [DependentTimes.of(task, run) for task, run in runs])


@dataclass
class Miss:
    """A dependent that missed the objective, or is still on an old digest."""

    task: str
    base: str
    why: str  # "late", "not pushed", "open", or "stale" (staleness: the task's base moved on since)
    exposure_seconds: float | None
    wave_id: str | None = None
    run_id: str | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "base": self.base, "why": self.why,
                "exposure_seconds": self.exposure_seconds, "wave_id": self.wave_id,
                "run_id": self.run_id, "detail": self.detail}


@dataclass
class Figures:
    events: int
    closed: int
    p50_seconds: float | None
    p95_seconds: float | None
    worst_seconds: float | None
    missed_slo: int

    def to_dict(self) -> dict[str, Any]:
        return {"events": self.events, "closed": self.closed, "p50_seconds": self.p50_seconds,
                "p95_seconds": self.p95_seconds, "worst_seconds": self.worst_seconds,
                "missed_slo": self.missed_slo}


def figures(events: list[BaseEvent], slo: timedelta, now: datetime) -> Figures:
    closed = [e.latency() for e in events]
    latencies = [c.total_seconds() for c in closed if c is not None]
    exposures = [e.exposure(now).total_seconds() for e in events]
    return Figures(len(events), len(latencies), percentile(latencies, 0.50), percentile(latencies, 0.95),
                   max(exposures, default=None),
                   sum(1 for e in events if e.exposure(now) > slo or _unpushed(e)))


def _unpushed(event: BaseEvent) -> bool:
    return any(d.ended and not d.pushed for d in event.dependents)


def misses(events: list[BaseEvent], slo: timedelta, now: datetime) -> list[Miss]:
    """Each dependent that pushed later than the objective allows, ended without pushing, or is
    still on its way past the objective."""
    found: list[Miss] = []
    for event in events:
        for d in event.dependents:
            if d.pushed is not None:
                took = d.pushed - event.pushed
                if took > slo:
                    found.append(Miss(d.task, event.base, "late", took.total_seconds(), event.wave_id,
                                      d.run_id, f"pushed {_human(took)} after the base (SLO {_human(slo)})"))
            elif d.ended:
                found.append(Miss(d.task, event.base, "not pushed", (now - event.pushed).total_seconds(),
                                  event.wave_id, d.run_id, f"run {d.run_id} ended {d.status}"))
            elif now - event.pushed > slo:
                found.append(Miss(d.task, event.base, "open", (now - event.pushed).total_seconds(),
                                  event.wave_id, d.run_id, f"run {d.run_id} is {d.status} past the SLO"))
    return found


def _human(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 2 * 86400:
        return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
    return f"{seconds // 86400}d{(seconds % 86400) // 3600}h"


@dataclass
class LatencyReport:
    since: timedelta
    slo: timedelta
    now: datetime
    events: list[BaseEvent]
    stale: list[Miss] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        bases = sorted({e.base for e in self.events})
        return {
            "since_seconds": self.since.total_seconds(), "slo_seconds": self.slo.total_seconds(),
            "now": format_time(self.now),
            "overall": figures(self.events, self.slo, self.now).to_dict(),
            "bases": [{"base": base, **figures([e for e in self.events if e.base == base], self.slo,
                                               self.now).to_dict()} for base in bases],
            "missed": [m.to_dict() for m in misses(self.events, self.slo, self.now) + self.stale],
            "events": [e.to_dict(self.now) for e in self.events],
        }
