"""Settle windows (shared.domain.settling) at dispatch, and the pass that dispatches settled bases.

- `defer` (from Dispatcher.handle, after the event is claimed): the push of a base whose registry
  has a settle window moves the base's settling row (etag-guarded; concurrent pushes retry) and is
  decided `settling until <time>`. Nothing is claimed, no run id is spent.
- `release_due` (housekeeping, every minute; `POST /api/bases/settle` for one pass now): each base
  still for its window is dispatched as one event for its newest digest (Settling.event: an id per
  base and digest), then its row is removed if it still names that digest. At least once, and
  idempotent: a pass that dies between the dispatch and the removal, or two passes at once,
  dispatch the same event id, which the decision log decides once; a push that moved the base
  during the dispatch keeps its row (the removal is etag-guarded), and its window starts again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from shared.domain.decisions import Decision
from shared.domain.events import ImagePushed
from shared.domain.settling import SettleSettings, Settling, SettlingConflict
from shared.domain.vocabulary import EventSource, Outcome, format_time, utc_now
from shared.service_layer.ports import DecisionLog

log = logging.getLogger(__name__)

SAVE_ROUNDS = 10


class SettlingStore(Protocol):
    def get(self, reference: str) -> Settling | None: ...

    def put(self, settling: Settling) -> None:
        """Create (etag None: SettlingConflict if it exists) or replace if unchanged since read
        (SettlingConflict otherwise)."""

    def remove(self, settling: Settling) -> bool:
        """Remove the row if it is unchanged since read; False when it changed (or is gone)."""

    def all(self) -> list[Settling]: ...


class SettleWindows:
    def __init__(self, store: SettlingStore, decisions: DecisionLog, settings: SettleSettings):
        self.store = store
        self.decisions = decisions
        self.settings = settings

    def window(self, event: ImagePushed) -> int:
        """Seconds the pushed base must be still before it is dispatched (0: at once). A rebuild a
        person asked for is never held back."""
        if event.source == EventSource.REBUILD:
            return 0
        return self.settings.seconds_for(event.registry)

    def defer(self, event: ImagePushed, seconds: int) -> Decision:
        """Note the push on its base's settling row and record the event's decision (the caller has
        claimed the event)."""
        reference = event.reference
        for _ in range(SAVE_ROUNDS):
            now = utc_now()
            current = self.store.get(reference)
            settling = Settling.of(event, now) if current is None else current.moved(event, now)
            try:
                self.store.put(settling)
                break
            except SettlingConflict:
                continue  # another push of this base wrote first: fold this one into what it wrote
        else:
            raise SettlingConflict(f"the settling row of {reference} kept changing")
        moved = "" if settling.digest == event.digest else f"; the base moved on to {settling.digest} since"
        reason = (f"settling until {format_time(settling.due(seconds))}: one wave starts on the newest "
                  f"digest of {reference} once it has been still for {seconds}s "
                  f"({settling.deliveries} deliveries folded in){moved}")
        decision = Decision(event.event_id, event.source, Outcome.SETTLING, reason, image=reference,
                            digest=event.digest)
        self.decisions.record(decision)
        return decision

    def release_due(self, dispatch: Callable[[ImagePushed], Decision],
                    now: datetime | None = None) -> list[Decision]:
        """Dispatch every base that has been still for its window (see the module docstring)."""
        now = now or utc_now()
        decided: list[Decision] = []
        for settling in self.store.all():
            if settling.due(self.settings.seconds_for(settling.registry)) > now:
                continue
            decision = dispatch(settling.event(now))
            if not self.store.remove(settling):
                log.info("%s moved while its settled push was dispatched: it settles again",
                         settling.reference)
            decided.append(decision)
        return decided

    def pending(self) -> list[tuple[Settling, datetime]]:
        """The bases settling now, each with the time it will be dispatched if it stays still."""
        return [(s, s.due(self.settings.seconds_for(s.registry))) for s in self.store.all()]
