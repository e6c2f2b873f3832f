"""The patch latency report (shared.domain.latency): the base events of a period, read from the
waves they started and their members' runs, and the dependents still on an old digest (the
staleness report).

Reads only: the waves newest first down to the start of the period (a wave row carries its push's
times), each one's members, and their runs, several at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from shared.domain.latency import BaseEvent, LatencyReport, Miss, base_event
from shared.domain.runs import Run, RunNotFound
from shared.domain.vocabulary import utc_now
from shared.domain.waves import Member, Wave
from shared.service_layer.ports import RunRepository, WaveRepository
from shared.service_layer.staleness import StalenessReport, State

WAVES_PER_PAGE = 100
READS_IN_FLIGHT = 8


class PatchLatency:
    def __init__(self, waves: WaveRepository, runs: RunRepository, staleness: StalenessReport | None = None,
                 members: Callable[[Wave], list[Member]] | None = None):
        self.waves = waves
        self.runs = runs
        # A wave's every member (WaveCoordinator.members: a big wave's backlog recorded first, so
        # no event looks closed on the members written so far); else the stored ones.
        self._members = members or (lambda wave: self.waves.members(wave.wave_id))
        # Without it, the report lists only what its waves show (no registry is asked).
        self.staleness = staleness
        self._pool = ThreadPoolExecutor(max_workers=READS_IN_FLIGHT, thread_name_prefix="latency")

    def report(self, since: timedelta, slo: timedelta, now: datetime | None = None) -> LatencyReport:
        now = now or utc_now()
        waves = self._waves_since(now - since)
        events = [e for e in self._pool.map(self._event, waves) if e is not None]
        events.sort(key=lambda e: e.pushed)
        return LatencyReport(since, slo, now, events, self._stale(events, now))

    def _waves_since(self, start: datetime) -> list[Wave]:
        found: list[Wave] = []
        after: str | None = None
        while True:
            page, after = self.waves.newest(top=WAVES_PER_PAGE, after=after)
            found.extend(w for w in page if w.created_at >= start)
            # Newest first: a page that reaches before the start ends the read.
            if after is None or not page or page[-1].created_at < start:
                return found

    def _event(self, wave: Wave) -> BaseEvent | None:
        if wave.pushed_at is None:
            return None
        members = self._members(wave)
        runs = [(m.task, self._run(m.run_id)) for m in members]
        return base_event(wave, [(task, run) for task, run in runs if run is not None])

    def _run(self, run_id: str) -> Run | None:
        try:
            return self.runs.get(run_id)[0]
        except RunNotFound:
            return None

    def _stale(self, events: list[BaseEvent], now: datetime) -> list[Miss]:
        """Dependents whose base moved on since they last built, but not those the events list
        already (a run of theirs is on its way or ended without pushing)."""
        if self.staleness is None:
            return []
        entries, _ = self.staleness.report()
        on_the_way = {(d.task, e.base) for e in events for d in e.dependents if not d.pushed}
        return [Miss(entry.task, entry.base, "stale",
                     (now - entry.since).total_seconds() if entry.since else None,
                     run_id=entry.run_id, detail=f"{entry.cause}: {entry.reason}")
                for entry in entries
                if entry.state == State.STALE and (entry.task, entry.base) not in on_the_way]
