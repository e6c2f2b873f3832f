"""Quarantine (shared.domain.quarantine): the list of base digests nothing may be built on, and the
checks dispatch, manual runs and the circuit breaker make against it.

- Dispatch (`blocking`): the pushed digest and each dependent's platform digest, against the list
  read once per event. A blocked push is decided `quarantined` and claims no rows, so the next
  push (or the same one once released) is decided as if the blocked one never came.
- Manual, timer and commit runs (`check_task`, from Scheduler.run_task and start_run): the
  digests the task's bases point at now (one registry read per base, only while something is
  quarantined; a base that cannot be read is not blocked here, the build will say why). A refused
  manual run is recorded as a decision (source `manual`); a refused timer slot or commit is its
  event's decision (shared.service_layer.triggered).
- The breaker (`on_hold`): a held wave started by a base push quarantines that digest; resuming
  the wave (`on_resume`: a person decided the base is fine) lifts that quarantine, and only that
  one (a quarantine set by a person stays until `base release`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from typing import Protocol

from shared.domain.decisions import Decision, TaskDecision
from shared.domain.quarantine import (
    NotQuarantined,
    Quarantined,
    QuarantineEntry,
    check_reason,
    parse_target,
)
from shared.domain.tasks import Task
from shared.domain.vocabulary import EventSource, Outcome
from shared.domain.waves import Wave
from shared.service_layer.ports import DecisionLog, Registry

log = logging.getLogger(__name__)


class QuarantineStore(Protocol):
    def put(self, entry: QuarantineEntry) -> None: ...

    def remove(self, digest: str) -> QuarantineEntry | None:
        """The entry removed, None when there was none."""

    def all(self) -> list[QuarantineEntry]: ...


class QuarantineList:
    def __init__(self, store: QuarantineStore, registry: Registry, decisions: DecisionLog | None = None):
        self.store = store
        self.registry = registry
        # Where a refused manual run is recorded (`decision list`, `task why` find it).
        self.decisions = decisions

    def add(self, target: object, reason: object, by: str = "manual") -> QuarantineEntry:
        """Quarantine IMAGE@DIGEST (again: the new reason replaces the old). Both are checked here,
        so a caller may hand over whatever a request body held (InvalidQuarantine for a non-string)."""
        image, digest = parse_target(target)
        entry = QuarantineEntry(digest, image, check_reason(reason), by)
        self.store.put(entry)
        log.warning("%s@%s quarantined (%s): %s", image, digest, by, entry.reason)
        return entry

    def release(self, target: object) -> QuarantineEntry:
        image, digest = parse_target(target)
        entry = self.store.remove(digest)
        if entry is None:
            raise NotQuarantined(f"{digest} is not quarantined")
        log.warning("%s@%s released from quarantine", image, digest)
        return entry

    def entries(self) -> list[QuarantineEntry]:
        return sorted(self.store.all(), key=lambda e: e.since, reverse=True)

    def blocking(self, digests: Iterable[str | None]) -> QuarantineEntry | None:
        wanted = {d for d in digests if d}
        if not wanted:
            return None
        return next((e for e in self.store.all() if e.digest in wanted), None)

    def check_task(self, task: Task, record: bool = True) -> None:
        """Quarantined when a base of `task` points at a quarantined digest now. `record`: the
        refusal is recorded as a manual run's decision (a timer's or a commit's caller records it
        under its own event id instead: shared.service_layer.triggered)."""
        entries = {e.digest: e for e in self.store.all()}
        if not entries:
            return  # the usual case: no registry read at all
        for dependency in task.dependencies:
            digest = self.registry.resolve_digest(dependency.image, task.platform, task.credentials)
            if digest in entries:
                entry = entries[digest]
                if record and self.decisions is not None:
                    refused = Decision(f"manual-{uuid.uuid4()}", EventSource.MANUAL, Outcome.QUARANTINED,
                                       entry.decision, image=dependency.image, digest=digest,
                                       tasks=[TaskDecision(task.name, Outcome.QUARANTINED, entry.decision)])
                    self.decisions.record(refused, mark_seen=False)
                raise Quarantined(entry)

    @staticmethod
    def _breaker_of(wave: Wave) -> str:
        return f"circuit breaker of wave {wave.wave_id}"

    def on_resume(self, wave: Wave) -> None:
        """A held wave resumed: the quarantine its breaker set is lifted. Never raises."""
        _, sep, digest = wave.root.partition("@")
        if not sep:
            return
        try:
            entry = next((e for e in self.store.all() if e.digest == digest), None)
            if entry is not None and entry.by == self._breaker_of(wave):
                self.store.remove(digest)
                log.warning("%s released from quarantine: wave %s resumed", wave.root, wave.wave_id)
        except Exception:  # noqa: BLE001 - best effort; `base release` lifts it otherwise
            log.warning("could not lift the quarantine of %s", wave.root, exc_info=True)

    def on_hold(self, wave: Wave) -> None:
        """A wave held by its breaker: the base digest it was on is quarantined with the breaker's
        reason. Never raises (the hold itself must go on)."""
        image, sep, digest = wave.root.partition("@")
        if not sep or not digest.startswith("sha256:") or " " in image:
            return  # a manual run's wave: no base digest to blame
        try:
            self.add(wave.root, wave.reason or "its wave's circuit breaker held it",
                     by=self._breaker_of(wave))
        except Exception:  # noqa: BLE001 - best effort; the wave is held either way
            log.warning("could not quarantine %s after wave %s held", wave.root, wave.wave_id, exc_info=True)
