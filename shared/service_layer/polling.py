"""Polling: the registries that send no events are asked, every interval, what their bases point at.

One cycle (the timer function `poll_bases` runs one per BASETRIGGER_POLL_INTERVAL):
1. The distinct bases of the dependency index (one scan), less those pinned by digest and those
   whose registry is watched by its events only (BASETRIGGER_WATCH, shared.domain.watch_settings).
2. One manifest request per base, however many tasks share it: a HEAD through the registry port,
   with the credentials of a task that has some for that registry (the next task's when a
   registry refuses them), at most `concurrency` in flight. A manifest list is read (one GET) only
   when its digest changed, to learn its platforms' digests.
3. A changed digest becomes the same domain event a push makes (source `poll`, an id derived from
   base, previous and new digest: shared.domain.poll_state.poll_event_id) and goes through the same
   receive (shared.service_layer.ingest) and decision log. A base seen for the first time is an
   event only where a task's recorded digest differs from it (a change between the task's creation
   and the first poll).
4. Only the bases whose row changed are written back (what they saw, the error: first sight, a
   changed digest, a new or cleared error), 100 to a transaction; then, once per registry that
   answered, when this cycle checked it (a "sweep"). A base without an error was answered by every
   sweep of its registry, so its last check is the later of its own and the sweep
   (BaseState.swept): a cycle in which nothing changed writes a row per registry, not per base.

Reads: the dependency index (one scan) and the base rows (one key range) are read side by side.

Failures: a base that cannot be read keeps its last digest and gets the error; a new or changed
error is recorded once as a `registry-error` decision (a refused password says so there). A
registry that answers 429 (or 503 with Retry-After), or cannot be reached, is left alone for the rest
of the cycle and backed off: at least Retry-After, else exponentially in intervals (0, 1, 3, 7…
skipped, at most an hour), each with ±20 % jitter so many instances never retry in step.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from shared.domain.credentials import RegistryCredential, for_registry
from shared.domain.decisions import Decision
from shared.domain.dependencies import DependencyRow
from shared.domain.events import ImagePushed
from shared.domain.image_ref import ImageRef, InvalidReference
from shared.domain.manifests import Failure, ManifestInfo, RegistryError
from shared.domain.poll_state import BaseOverview, BaseState, RegistryBackoff, error_event_id, poll_event_id
from shared.domain.tasks import Task
from shared.domain.vocabulary import EventSource, Outcome, Watch, utc_now
from shared.domain.watch_settings import PollSettings
from shared.service_layer.ingest import Ingest
from shared.service_layer.ports import BaseRepository, DecisionLog, IndexScan, Registry, TaskRepository

log = logging.getLogger(__name__)

MAX_BACKOFF = timedelta(hours=1)
JITTER = 0.2


@dataclass
class CycleReport:
    bases: int = 0  # distinct bases in the index
    polled: int = 0  # of which the poller watches
    checked: int = 0  # answered
    changed: int = 0  # digest changed (events dispatched)
    failed: int = 0  # errors (incl. skipped for a registry's back-off)
    requests: int = 0  # manifest requests sent (HEADs and index GETs)
    written: int = 0  # base rows written (those whose digest or error changed, and first sights)
    seconds: float = 0.0
    decisions: list[Decision] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {"bases": self.bases, "polled": self.polled, "checked": self.checked, "changed": self.changed,
                "failed": self.failed, "requests": self.requests, "written": self.written,
                "seconds": round(self.seconds, 3),
                "events": [d.event_id for d in self.decisions]}


@dataclass
class _Base:
    """One base to check: its rows in the index and the tasks behind them."""

    base: str
    ref: ImageRef
    rows: list[DependencyRow]
    credentials: list[tuple[str, RegistryCredential]]  # (task, credential), in task order


class Poller:
    def __init__(self, index: IndexScan, tasks: TaskRepository, bases: BaseRepository, registry: Registry,
                 ingest: Ingest, decisions: DecisionLog, settings: PollSettings,
                 clock: Callable[[], datetime] = utc_now, rng: random.Random | None = None):
        self.index = index
        self.tasks = tasks
        self.bases = bases
        self.registry = registry
        self.ingest = ingest
        self.decisions = decisions
        self.settings = settings
        self.clock = clock
        self.rng = rng or random.Random()
        self._pool = ThreadPoolExecutor(max_workers=max(1, settings.concurrency), thread_name_prefix="poll")

    # ---- what is watched ---------------------------------------------------------------------
    def _in_use(self) -> tuple[dict[str, list[DependencyRow]], dict[str, Task]]:
        by_base: dict[str, list[DependencyRow]] = defaultdict(list)
        for row in self.index.every_row():
            by_base[row.base].append(row)
        tasks = {t.name: t for t in self.tasks.all()}
        return by_base, tasks

    def watch_of(self, base: str) -> Watch | None:
        """How a base is watched; None when it is pinned by digest (it never changes)."""
        try:
            ref = ImageRef.parse(base)
        except InvalidReference:
            return None
        if ref.digest:
            return None
        return self.settings.mode(ref.registry)

    def _read(self) -> tuple[dict[str, list[DependencyRow]], dict[str, Task], dict[str, BaseState],
                             dict[str, datetime]]:
        """What a cycle or the overview starts from, read side by side: the bases in use, the tasks,
        the stored base rows and the registries' sweeps."""
        stored = self._pool.submit(self.bases.all)
        sweeps = self._pool.submit(self.bases.sweeps)
        by_base, tasks = self._in_use()
        return by_base, tasks, stored.result(), sweeps.result()

    @staticmethod
    def _registry_of(base: str) -> str | None:
        try:
            return ImageRef.parse(base).registry
        except InvalidReference:
            return None

    def overview(self) -> list[BaseOverview]:
        """Every distinct base of the index: how it is watched, who uses it, what the poller saw."""
        by_base, _, states, sweeps = self._read()
        result = []
        for base in sorted(by_base):
            watch = self.watch_of(base)
            state = states.get(base)
            if state is not None:
                registry = self._registry_of(base)
                state = state.swept(sweeps.get(registry) if registry else None)
            result.append(BaseOverview(base, watch or Watch.EVENTS, sorted(r.task for r in by_base[base]),
                                       state))
        return result

    # ---- one cycle -----------------------------------------------------------------------------
    def cycle(self) -> CycleReport:
        started = time.monotonic()
        report = CycleReport()
        now = self.clock()
        by_base, tasks, states, sweeps = self._read()
        backoffs = self.bases.backoffs()
        report.bases = len(by_base)
        targets: list[_Base] = []
        for base, rows in sorted(by_base.items()):
            watch = self.watch_of(base)
            if watch is None or watch == Watch.EVENTS:
                continue
            ref = ImageRef.parse(base)
            credentials = []
            for name in sorted({r.task for r in rows}):
                task = tasks.get(name)
                credential = for_registry(task.credentials, ref.registry) if task else None
                if credential is not None:
                    credentials.append((name, credential))
            targets.append(_Base(base, ref, rows, credentials))
        report.polled = len(targets)

        blocked: dict[str, RegistryError] = {}  # registries given up on for this cycle
        for registry, backoff in backoffs.items():
            if backoff.until and backoff.until > now:
                blocked[registry] = RegistryError(
                    Failure.RATE_LIMITED, f"not checked: backing off {registry} until "
                    f"{backoff.until.isoformat(timespec='seconds')} ({backoff.error})")
        wide: dict[str, RegistryError] = {}
        lock = threading.Lock()
        counter = [0]

        def check(target: _Base) -> tuple[_Base, ManifestInfo | RegistryError]:
            registry = target.ref.registry
            with lock:
                stop = blocked.get(registry) or wide.get(registry)
            if stop is not None:
                return target, stop if registry in blocked else RegistryError(
                    stop.failure, f"not checked: {registry} failed earlier in this cycle ({stop})")
            result = self._probe(target, states.get(target.base), counter, lock)
            if isinstance(result, RegistryError) and result.registry_wide:
                with lock:
                    wide.setdefault(registry, result)
            return target, result

        fresh: list[BaseState] = []
        answered: set[str] = set()  # registries that answered for at least one base
        for target, result in self._pool.map(check, targets):
            stored = states.get(target.base)
            registry = target.ref.registry
            state = stored.swept(sweeps.get(registry)) if stored else BaseState(target.base)
            state = self._settle(target, state, result, now, report)
            if not state.same_row(stored):
                fresh.append(state)
            if not isinstance(result, RegistryError):
                answered.add(registry)
        report.requests = counter[0]
        report.written = len(fresh)
        self.bases.save_many(fresh)  # before the sweeps: a base whose row failed is not swept
        if answered:
            self.bases.save_sweeps({registry: now for registry in answered})
        self._settle_backoffs(targets, wide, backoffs, now)
        gone = [base for base in states if base not in by_base]
        if gone:
            self.bases.remove_many(gone)
        report.seconds = time.monotonic() - started
        log.info("poll cycle: %d bases, %d polled, %d checked, %d changed, %d failed, %d requests, "
                 "%d rows written in %.1f s", report.bases, report.polled, report.checked, report.changed,
                 report.failed, report.requests, report.written, report.seconds)
        return report

    def _probe(self, target: _Base, state: BaseState | None, counter: list[int],
               lock: threading.Lock) -> ManifestInfo | RegistryError:
        """The base's manifest, trying each task's credential until one is accepted (anonymous when
        no task has any); a refusal names whose credentials were refused."""
        attempts: list[tuple[str | None, RegistryCredential | None]] = \
            [(task, cred) for task, cred in target.credentials] or [(None, None)]
        refused: list[str] = []
        last: RegistryError | None = None
        for task, credential in attempts:
            try:
                with lock:
                    counter[0] += 1
                info = self.registry.inspect(target.base, [credential] if credential else [])
                if info.is_index and (state is None or state.digest != info.digest) and \
                        any(r.platform for r in target.rows):
                    with lock:
                        counter[0] += 1
                    info = self.registry.inspect(f"{target.ref.name}@{info.digest}",
                                                 [credential] if credential else [], with_platforms=True)
                return info
            except RegistryError as exc:
                if exc.failure != Failure.UNAUTHORIZED or task is None:
                    if refused:
                        return RegistryError(exc.failure, f"{exc} (credentials of {', '.join(refused)} "
                                             "were refused)", exc.retry_after)
                    return exc
                refused.append(task)
                last = exc
        whose = f"task{'s' if len(refused) > 1 else ''} {', '.join(refused)}"
        return RegistryError(Failure.UNAUTHORIZED, f"{last} (credentials of {whose})")

    def _settle(self, target: _Base, state: BaseState, result: ManifestInfo | RegistryError, now: datetime,
                report: CycleReport) -> BaseState:
        if isinstance(result, RegistryError):
            report.failed += 1
            message = str(result)
            if message != state.error:
                state = replace(state, error=message, error_at=now)
                self._record_error(target, state, result)
            return state
        report.checked += 1
        state = replace(state, checked_at=now, error=None, error_at=None)
        if self._changed(target, state, result):
            try:
                (decision,) = self.ingest.receive([ImagePushed(
                    event_id=poll_event_id(target.base, state.digest, result.digest),
                    registry=target.ref.registry, repository=target.ref.repository,
                    tag=target.ref.tag or "latest", digest=result.digest, time=now, source=EventSource.POLL,
                    platforms=tuple(sorted(result.platforms.items())), media_type=result.media_type)])
            except Exception as exc:  # storage trouble: keep the old digest, the next cycle tries again
                log.warning("dispatch of the change of %s failed: %s", target.base, exc)
                report.failed += 1
                cause = exc.__cause__ or exc  # receive logged it, and says what failed as its cause
                return replace(state, error=f"the change to {result.digest} could not be dispatched: "
                               f"{cause.__class__.__name__}; retried next cycle", error_at=now)
            report.changed += 1
            report.decisions.append(decision)
            state = replace(state, changed_at=now)
        return replace(state, digest=result.digest, media_type=result.media_type,
                       platforms=dict(result.platforms) if result.platforms or not result.is_index
                       else state.platforms)

    @staticmethod
    def _changed(target: _Base, state: BaseState, info: ManifestInfo) -> bool:
        if state.digest is not None:
            return state.digest != info.digest
        # First sight: a change only where a task recorded another digest (unknown digests say nothing).
        return any(r.built_digest and r.built_digest != info.digest_for(r.platform) for r in target.rows)

    def _record_error(self, target: _Base, state: BaseState, error: RegistryError) -> None:
        if error.registry_wide and str(error).startswith("not checked"):
            return  # a consequence of the registry's own error, recorded once for its first base
        assert state.error is not None and state.error_at is not None
        decision = Decision(error_event_id(target.base, state.error, state.error_at), EventSource.POLL,
                            Outcome.REGISTRY_ERROR, f"cannot check {target.base}: {state.error}",
                            image=target.base, tasks=[])
        try:
            self.decisions.record(decision, mark_seen=False)
        except Exception:
            log.warning("could not record the error of %s", target.base, exc_info=True)

    def _settle_backoffs(self, targets: list[_Base], wide: dict[str, RegistryError],
                         backoffs: dict[str, RegistryBackoff], now: datetime) -> None:
        asked = {t.ref.registry for t in targets}
        for registry in asked:
            previous = backoffs.get(registry) or RegistryBackoff(registry)
            if previous.until and previous.until > now:
                continue  # still backing off: not asked this cycle
            error = wide.get(registry)
            if error is None:
                if previous.failures:
                    self.bases.save_backoff(RegistryBackoff(registry))
                continue
            failures = previous.failures + 1
            interval = timedelta(seconds=self.settings.interval_seconds)
            delay = min(interval * (2 ** (failures - 1) - 1), MAX_BACKOFF)
            if error.retry_after is not None:
                delay = max(delay, timedelta(seconds=error.retry_after))
            delay *= 1 + self.rng.uniform(-JITTER, JITTER)
            until = now + delay if delay > timedelta(0) else None
            self.bases.save_backoff(RegistryBackoff(registry, until, failures, str(error)))
            log.warning("poller backs off %s (failure %d) until %s: %s", registry, failures, until, error)
