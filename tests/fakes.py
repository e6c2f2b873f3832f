"""In-memory fakes of the service layer's ports (shared.service_layer.ports), for unit tests.

Each keeps what the real adapter keeps and honours the same contract (etags, merges, newest-first
lists), so the dispatcher's and worker's rules can be tested without Azurite. The Azurite tests in
tests/integration cover the real adapters.

`FakeApp` hands every fake to shared.bootstrap's `Adapters`, whose fields are the ports: so
`make typecheck` (which covers this file) fails as soon as a fake drifts from its port.
"""

from __future__ import annotations

import contextlib
import copy
import io
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from shared.adapters.run_backlog import from_json as backlog_from_json
from shared.adapters.run_backlog import to_json as backlog_json
from shared.bootstrap import Adapters, ServiceLayer
from shared.config import Settings, StorageSettings
from shared.domain.builds import (
    BuildRequest,
    BuildResult,
    BuildSpec,
    ContextError,
    LocalContextRoots,
    LogSink,
    Source,
    UploadGone,
)
from shared.domain.credentials import RegistryCredential
from shared.domain.decisions import Decision, EventBusy
from shared.domain.dependencies import DeferredClaim, DependencyRow
from shared.domain.git_polling import GitRemoteError, RemoteHead
from shared.domain.manifests import Failure, ManifestInfo, RawManifest, RegistryError
from shared.domain.notifications import Notification
from shared.domain.poll_state import BaseState, RegistryBackoff
from shared.domain.quarantine import QuarantineEntry
from shared.domain.rebase import RebasePlan, RebaseRefused
from shared.domain.runs import Run, RunConflict, RunIds, RunNotFound
from shared.domain.secrets import SecretMask
from shared.domain.settling import Settling, SettlingConflict
from shared.domain.task_links import TaskLinks
from shared.domain.tasks import Dependency, GraphChanged, Task, TaskChanged, TaskExists, TaskNotFound
from shared.domain.vocabulary import BuilderKind, RunStatus, WaveState, utc_now
from shared.domain.waves import Brakes, Member, Wave, WaveConflict, WaveNotFound
from shared.service_layer.ports import BacklogRecord


class FakeRunBacklog:
    """Keeps each record as the blob's JSON (shared.adapters.run_backlog), so its format is used."""

    def __init__(self) -> None:
        self.backlogs: dict[str, str] = {}

    def put(self, wave_id: str, runs: list[Run], members: Sequence[Member] = (),
            claims: Sequence[DeferredClaim] = ()) -> None:
        self.backlogs[wave_id] = backlog_json(runs, members, claims)

    def get(self, wave_id: str) -> list[Run]:
        return self.get_record(wave_id).runs

    def get_record(self, wave_id: str) -> BacklogRecord:
        return backlog_from_json(self.backlogs[wave_id]) if wave_id in self.backlogs else BacklogRecord()

    def waves(self) -> list[str]:
        return sorted(self.backlogs)

    def remove(self, wave_id: str) -> None:
        self.backlogs.pop(wave_id, None)


class FakeRunRepository:
    def __init__(self, prefix: str = "da"):
        self.ids = RunIds(prefix)
        self._counter = 0
        self._runs: dict[str, tuple[Run, int]] = {}
        self._lock = threading.Lock()
        # Called before each save: lets a test change a run "concurrently".
        self.before_save: Callable[[Run], None] | None = None

    def allocate(self, count: int) -> list[str]:
        with self._lock:
            start, self._counter = self._counter, self._counter + count
        return [self.ids.format(n) for n in range(start + 1, start + count + 1)]

    def create_many(self, runs: list[Run]) -> None:
        for run in runs:
            self._runs[run.run_id] = (copy.deepcopy(run), self._runs.get(run.run_id, (run, 0))[1] + 1)

    def create_absent(self, runs: list[Run]) -> None:
        with self._lock:
            for run in runs:
                if run.run_id not in self._runs:
                    self._runs[run.run_id] = (copy.deepcopy(run), 1)

    def get(self, run_id: str) -> tuple[Run, str]:
        if run_id not in self._runs:
            raise RunNotFound(f"run {run_id!r} not found")
        run, version = self._runs[run_id]
        return copy.deepcopy(run), str(version)

    def save(self, run: Run, etag: str | None) -> str:
        if self.before_save:
            hook, self.before_save = self.before_save, None
            hook(run)
        with self._lock:
            _, version = self._runs.get(run.run_id, (run, 0))
            if etag is not None and etag != str(version):
                raise RunConflict(f"run {run.run_id} changed concurrently")
            self._runs[run.run_id] = (copy.deepcopy(run), version + 1)
            return str(version + 1)

    def all(self) -> list[Run]:
        return [copy.deepcopy(run) for run, _ in self._runs.values()]

    def newest(self, *, top: int = 15, task: str | None = None, status: RunStatus | None = None,
             image: str | None = None, after: str | None = None) -> tuple[list[Run], str | None]:
        runs = sorted(self.all(), key=lambda r: self.ids.counter(r.run_id), reverse=True)
        if after:
            runs = [r for r in runs if self.ids.counter(r.run_id) < self.ids.counter(after)]
        runs = [r for r in runs if (task is None or r.task == task) and (status is None or r.status == status)
                and (image is None or (r.status != RunStatus.QUEUED and image in r.output_images))]
        page = runs[:top]
        return page, page[-1].run_id if len(page) == top else None

    def producer_of(self, image: str) -> Run | None:
        runs, _ = self.newest(image=image, top=1)
        return runs[0] if runs else None

    def in_status(self, status: RunStatus) -> list[Run]:
        return [r for r in self.all() if r.status == status]


class FakeTaskRepository:
    """Tasks with versions: each write stamps a new etag, and a conditional write or delete
    refuses a task that is no longer at the etag it was given, as the table does."""

    def __init__(self) -> None:
        self.tasks: dict[str, Task] = {}
        self._version = 0
        self.graph_version = 0
        self._lock = threading.RLock()

    def _stamp(self, task: Task) -> str:
        self._version += 1
        task.etag = f'W/"{self._version}"'
        return task.etag

    def _check(self, name: str, etag: str | None) -> None:
        if name not in self.tasks:
            raise TaskNotFound(f"task {name!r} not found")
        if etag is not None and self.tasks[name].etag != etag:
            raise TaskChanged(f"task {name!r} changed since it was read", self.tasks[name].etag)

    def graph(self) -> tuple[list[Task], str]:
        with self._lock:
            return self.all(), str(self.graph_version)

    def _move_graph(self, graph_version: str | None) -> None:
        if graph_version is None:
            return
        if graph_version != str(self.graph_version):
            raise GraphChanged("the task graph changed")
        self.graph_version += 1

    def get(self, name: str) -> Task:
        if name not in self.tasks:
            raise TaskNotFound(f"task {name!r} not found")
        return copy.deepcopy(self.tasks[name])

    def create(self, task: Task, graph_version: str | None = None) -> str:
        with self._lock:
            if task.name in self.tasks:
                raise TaskExists(f"task {task.name!r} already exists")
            self._move_graph(graph_version)
            stored = copy.deepcopy(task)
            self.tasks[task.name] = stored
            return self._stamp(stored)

    def save(self, task: Task, etag: str | None = None, graph_version: str | None = None) -> str:
        with self._lock:
            self._check(task.name, etag)  # replace only: a task deleted meanwhile stays deleted
            self._move_graph(graph_version)
            stored = copy.deepcopy(task)
            self.tasks[task.name] = stored
            return self._stamp(stored)

    def set_dependencies(self, name: str, deps: list[Dependency]) -> None:
        self._check(name, None)
        self.tasks[name].dependencies = copy.deepcopy(deps)
        self._stamp(self.tasks[name])

    def delete(self, name: str, etag: str | None = None) -> None:
        if name not in self.tasks:
            return
        self._check(name, etag)
        del self.tasks[name]

    def all(self) -> list[Task]:
        return [copy.deepcopy(t) for t in self.tasks.values()]

    def links(self) -> list[TaskLinks]:
        return [TaskLinks.of(t) for t in self.tasks.values()]


class FakeDependencyTable:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], DependencyRow] = {}
        self.written_at: dict[tuple[str, str], datetime] = {}
        self._version = 0

    def _stamp(self, row: DependencyRow) -> None:
        self._version += 1
        row.etag = str(self._version)
        self.written_at[(row.base, row.task)] = utc_now()

    def changed_since(self, base: str, since: datetime) -> list[DependencyRow]:
        return [self._copy(r) for key, r in sorted(self.rows.items())
                if key[0] == base and self.written_at.get(key, since) >= since]

    def _copy(self, row: DependencyRow) -> DependencyRow:
        return copy.deepcopy(row)

    def dependents(self, base: str) -> list[DependencyRow]:
        return [self._copy(r) for (b, _), r in sorted(self.rows.items()) if b == base]

    def get(self, base: str, task: str) -> DependencyRow | None:
        row = self.rows.get((base, task))
        return self._copy(row) if row else None

    def put_task_fields(self, row: DependencyRow) -> None:
        stored = self.rows.get((row.base, row.task))
        new = replace(row, triggered_digest=stored.triggered_digest if stored else None,
                      pending_run_id=stored.pending_run_id if stored else None,
                      built_digest=row.built_digest or (stored.built_digest if stored else None))
        self._stamp(new)
        self.rows[(row.base, row.task)] = new

    def put_build_fields(self, row: DependencyRow) -> None:
        stored = self.rows.get((row.base, row.task))
        if stored is None:
            return
        stored.runtime = row.runtime
        stored.built_digest = row.built_digest or stored.built_digest
        self._stamp(stored)

    def remove(self, base: str, task: str) -> None:
        self.rows.pop((base, task), None)

    def claim(self, rows: list[DependencyRow]) -> tuple[list[DependencyRow], list[DependencyRow]]:
        won: list[DependencyRow] = []
        lost: list[DependencyRow] = []
        for row in rows:
            (won if self.update_if_unchanged(row) else lost).append(row)
        return won, lost

    def update_if_unchanged(self, row: DependencyRow) -> bool:
        stored = self.rows.get((row.base, row.task))
        if stored is None or stored.etag != row.etag:
            return False
        stored.triggered_digest, stored.pending_run_id = row.triggered_digest, row.pending_run_id
        self._stamp(stored)
        return True

    def every_row(self) -> list[DependencyRow]:
        return [self._copy(r) for _, r in sorted(self.rows.items())]


class FakeDecisionLog:
    def __init__(self) -> None:
        self.decisions: list[Decision] = []
        self.markers: dict[str, Decision] = {}

    def seen(self, event_id: str) -> Decision | None:
        return self.markers.get(event_id)

    def record(self, decision: Decision, mark_seen: bool = True) -> None:
        self.decisions.append(decision)
        if mark_seen:
            self.markers.setdefault(decision.event_id, decision)

    def recent(self, top: int = 20, image: str | None = None) -> list[Decision]:
        found = [d for d in reversed(self.decisions) if image is None or d.image == image]
        return found[:top]


class FakeDispatchClaims:
    """Claims on events and holds on pushes; an event's claim ends when its decision is recorded in
    `decisions` (as the table adapter's marker row becomes the decided marker)."""

    def __init__(self, decisions: FakeDecisionLog) -> None:
        self.decisions = decisions
        self.dispatching: set[str] = set()
        self.held: dict[str, str] = {}  # push -> the token of its hold
        self.holds_taken = 0
        self._holds_lock = threading.Lock()

    def begin(self, event_id: str) -> Decision | None:
        decided = self.decisions.seen(event_id)
        if decided is not None:
            return decided
        if event_id in self.dispatching:
            raise EventBusy(f"event {event_id} is being dispatched")
        self.dispatching.add(event_id)
        return None

    def abandon(self, event_id: str) -> None:
        self.dispatching.discard(event_id)

    def hold_push(self, push: str) -> str:
        with self._holds_lock:
            if push in self.held:
                raise EventBusy(f"push {push} is being dispatched")
            self.holds_taken += 1
            self.held[push] = str(self.holds_taken)
            return self.held[push]

    def release_push(self, push: str, token: str) -> None:
        with self._holds_lock:
            if self.held.get(push) == token:
                del self.held[push]


class FakeBuildQueue:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, run_ids: list[str]) -> None:
        self.sent.extend(run_ids)

    def is_empty(self) -> bool:
        return not self.sent


class FakeLogWriter:
    def __init__(self, lines: list[str], secrets: list[str]):
        self.lines = lines
        self.mask = SecretMask(secrets)

    def __call__(self, line: str) -> None:
        self.lines.append(self.mask(line.rstrip("\n")))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class FakeRunLogs:
    def __init__(self) -> None:
        self.lines: dict[str, list[str]] = {}

    def writer(self, run_id: str, secrets: list[str]) -> FakeLogWriter:
        return FakeLogWriter(self.lines.setdefault(run_id, []), secrets)

    def read(self, run_id: str, offset: int = 0) -> bytes:
        text = "".join(f"{line}\n" for line in self.lines.get(run_id, []))
        return text.encode()[offset:]


class FakeSources:
    """Every source is a folder holding one Dockerfile, whose text the test chooses."""

    def __init__(self, dockerfile: str = "FROM localhost:5000/base:1\n"):
        self.dockerfile = dockerfile
        # A Dockerfile of its own for a directory source (a task's context), when a test wants one.
        self.dockerfiles: dict[str, str] = {}
        self.uploads: dict[str, bytes] = {}
        self.unreadable = False
        self.checkouts: list[Source] = []  # the source of every checkout, in order

    def upload(self, name: str, archive: bytes) -> None:
        self.uploads[name] = archive

    def remove(self, name: str) -> None:
        self.uploads.pop(name, None)

    def checkout(self, spec: BuildSpec, workspace: Path) -> Path:
        if self.unreadable:
            raise ContextError(f"cannot clone {spec.source.describe()}")
        self.checkouts.append(spec.source)
        if spec.source.upload and spec.source.upload not in self.uploads:
            raise UploadGone(f"the upload {spec.source.upload} is not in storage")
        folder = workspace / "context"
        folder.mkdir(parents=True, exist_ok=True)
        text = self.dockerfiles.get(spec.source.directory or "", self.dockerfile)
        (folder / spec.dockerfile).write_text(text)
        return folder


class FakeRegistry:
    def __init__(self, digests: dict[str, str] | None = None):
        self.digests = dict(digests or {})
        # name@digest -> layer digests (base_layers)
        self.layers: dict[str, list[str]] = {}

    def resolve_digest(self, reference: str, platform: str | None = None,
                       credentials: Sequence[RegistryCredential] = ()) -> str | None:
        return self.digests.get(reference)

    def inspect(self, reference: str, credentials: Sequence[RegistryCredential] = (),
                with_platforms: bool = False) -> ManifestInfo:
        if reference not in self.digests:
            raise RegistryError(Failure.NOT_FOUND, f"{reference} does not exist (404)")
        return ManifestInfo(self.digests[reference])

    def base_layers(self, reference: str, platform: str | None = None,
                    credentials: Sequence[RegistryCredential] = ()) -> list[str]:
        return list(self.layers.get(reference, []))

    # What `base changes` reads (ImageReader): only digests are known here, no manifests or blobs
    # (tests/unit/test_base_changes_service.py has a registry that keeps them).
    def manifest(self, reference: str,
                 credentials: Sequence[RegistryCredential] = ()) -> tuple[str, dict[str, Any]]:
        raise RegistryError(Failure.NOT_FOUND, f"no manifest of {reference} is kept here (404)")

    @contextlib.contextmanager
    def blob(self, reference: str, digest: str,
             credentials: Sequence[RegistryCredential] = ()) -> Iterator[IO[bytes]]:
        raise RegistryError(Failure.NOT_FOUND, f"no blob {digest} is kept here (404)")
        yield io.BytesIO()  # never reached: makes this a generator, as contextmanager wants


class FakeImageStores:
    """What `--rollback` reads and writes (ImageStores): no manifests are kept here, so nothing moves
    (tests/unit/test_rollback.py has a store that keeps them)."""

    def images(self, reference: str, credentials: Sequence[RegistryCredential] = ()) -> FakeImageStores:
        return self

    def manifest(self, reference: str) -> RawManifest:
        raise RegistryError(Failure.NOT_FOUND, f"no manifest of {reference} is kept here (404)")

    def put_manifest(self, reference: str, body: bytes, media_type: str) -> str:
        raise RegistryError(Failure.NOT_FOUND, f"{reference} cannot be written here")


class FakeBuilder:
    """Answers every build with `result` (or raises `crash`), logging one line."""

    secret_args_as_build_args = False
    kind = BuilderKind.BUILDAH

    def __init__(self, result: BuildResult | None = None):
        self.result = result or BuildResult(RunStatus.SUCCEEDED, output_digest="sha256:" + "a" * 64)
        self.crash: Exception | None = None
        self.requests: list[BuildRequest] = []
        # Called during the build: lets a test cancel or take over the run meanwhile.
        self.during: Callable[[BuildRequest], None] | None = None
        self.canceled: list[str] = []  # the builder run ids cancel() was asked to stop
        self.cancel_note: str | None = None
        self.cancel_crash: Exception | None = None

    def cancel(self, run: Run) -> str | None:
        """Records the builder run it was asked to stop; answers `cancel_note` (None: stopped)."""
        self.canceled.append(run.builder_run_id or "")
        if self.cancel_crash:
            raise self.cancel_crash
        return self.cancel_note

    def build(self, request: BuildRequest, log: LogSink) -> BuildResult:
        self.requests.append(request)
        log(f"building {', '.join(request.images)}")
        if self.during:
            self.during(request)
        if self.crash:
            raise self.crash
        return self.result


class FakeWaveRepository:
    def __init__(self, run_ids: RunIds):
        self.run_ids = run_ids
        self.waves: dict[str, tuple[Wave, int]] = {}
        self.member_rows: dict[tuple[str, str], tuple[Member, int]] = {}
        self.ready_marks: dict[str, set[str]] = {}
        # Every member row written, by wave (a test counts what a push wrote before it answered).
        self.member_writes: dict[str, int] = {}

    def create(self, wave: Wave, members: list[Member]) -> None:
        self.member_writes[wave.wave_id] = self.member_writes.get(wave.wave_id, 0) + len(members)
        for member in members:
            self.member_rows[(member.wave_id, member.task)] = (copy.deepcopy(member), 1)
            if member.ready and not member.released:
                self.mark_ready(member)
        self.waves[wave.wave_id] = (copy.deepcopy(wave), 1)

    def get(self, wave_id: str) -> tuple[Wave, str]:
        if wave_id not in self.waves:
            raise WaveNotFound(wave_id)
        wave, version = self.waves[wave_id]
        return copy.deepcopy(wave), str(version)

    def save(self, wave: Wave, etag: str) -> str:
        _, version = self.waves[wave.wave_id]
        if str(version) != etag:
            raise WaveConflict(wave.wave_id)
        self.waves[wave.wave_id] = (copy.deepcopy(wave), version + 1)
        return str(version + 1)

    def newest(self, top: int = 15, after: str | None = None) -> tuple[list[Wave], str | None]:
        waves = sorted((w for w, _ in self.waves.values()), key=lambda w: int(w.wave_id[1:]), reverse=True)
        if after:
            waves = [w for w in waves if int(w.wave_id[1:]) < int(after[1:])]
        page = [copy.deepcopy(w) for w in waves[:top]]
        return page, page[-1].wave_id if len(page) == top else None

    def active(self) -> list[Wave]:
        return [copy.deepcopy(w) for w, _ in self.waves.values() if w.state == WaveState.ACTIVE]

    def members(self, wave_id: str) -> list[Member]:
        return [m for (w, t) in sorted(self.member_rows) if w == wave_id
                for m in [self.member(w, t)] if m is not None]

    def member(self, wave_id: str, task: str) -> Member | None:
        if (wave_id, task) not in self.member_rows:
            return None
        member, version = self.member_rows[(wave_id, task)]
        found = copy.deepcopy(member)
        found.etag = str(version)
        return found

    def create_absent(self, members: list[Member]) -> None:
        for member in members:
            if self.add_member(member):
                self.member_writes[member.wave_id] = self.member_writes.get(member.wave_id, 0) + 1
            stored = self.member(member.wave_id, member.task)
            if stored is not None and stored.ready and not stored.released and stored.outcome is None:
                self.mark_ready(stored)

    def add_member(self, member: Member) -> bool:
        if (member.wave_id, member.task) in self.member_rows:
            return False
        self.member_rows[(member.wave_id, member.task)] = (copy.deepcopy(member), 1)
        return True

    def save_member(self, member: Member) -> bool:
        stored = self.member_rows.get((member.wave_id, member.task))
        if stored is None or str(stored[1]) != member.etag:
            return False
        self.member_rows[(member.wave_id, member.task)] = (copy.deepcopy(member), stored[1] + 1)
        member.etag = str(stored[1] + 1)
        return True

    def mark_ready(self, member: Member) -> None:
        self.ready_marks.setdefault(member.wave_id, set()).add(member.task)

    def unmark_ready(self, member: Member) -> None:
        self.ready_marks.get(member.wave_id, set()).discard(member.task)

    def ready(self, wave_id: str, limit: int) -> list[Member]:
        found = [m for t in self.ready_marks.get(wave_id, set()) for m in [self.member(wave_id, t)] if m]
        found.sort(key=lambda m: (m.level, self.run_ids.counter(m.run_id)))
        return found[:limit]


class FakeSlots:
    def __init__(self) -> None:
        self.places: dict[str, dict[int, str]] = {}
        # Every run that held a place of "global" while another did: the cap's witness.
        self.most_at_once: dict[str, int] = {}
        self.since: dict[tuple[str, str], datetime] = {}
        # A take is atomic in the store (insert-if-absent); takes may come side by side.
        self._lock = threading.Lock()

    def take(self, scope: str, cap: int, run_id: str, first: int | None = None, sole: bool = False) -> bool:
        with self._lock:
            places = self.places.setdefault(scope, {})
            if run_id in places.values():
                return True
            free = [n for n in range(cap) if n not in places]
            if not free:
                return False
            places[free[0]] = run_id
            self.since[(scope, run_id)] = utc_now()
            self.most_at_once[scope] = max(self.most_at_once.get(scope, 0), len(places))
            return True

    def give_back(self, scope: str, run_id: str) -> None:
        with self._lock:
            places = self.places.get(scope, {})
            for slot in [n for n, r in places.items() if r == run_id]:
                del places[slot]

    def holders(self, scope: str) -> list[str]:
        return list(self.places.get(scope, {}).values())

    def taken_at(self, scope: str) -> dict[str, datetime]:
        return {run_id: self.since[(scope, run_id)] for run_id in self.holders(scope)}


class FakeTimerSlots:
    def __init__(self) -> None:
        self.slots: dict[tuple[str, str], datetime] = {}

    def last(self, task: str, timer: str) -> datetime | None:
        return self.slots.get((task, timer))

    def advance(self, task: str, timer: str, slot: datetime) -> None:
        key = (task, timer)
        if key not in self.slots or self.slots[key] < slot:
            self.slots[key] = slot


class FakeNotificationOutbox:
    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def add(self, notification: Notification) -> bool:
        with self._lock:
            if notification.notification_id in self.rows:
                return False
            self.rows[notification.notification_id] = {"notification": notification, "state": "pending",
                                                       "attempts": 0, "tried_at": utc_now(), "error": None}
            return True

    def stale(self, tried_before: datetime) -> list[Notification]:
        return [r["notification"] for r in self.rows.values()
                if r["state"] == "pending" and r["tried_at"] < tried_before]

    def claim(self, notification_id: str, tried_before: datetime) -> bool:
        with self._lock:
            row = self.rows.get(notification_id)
            if row is None or row["state"] != "pending" or row["tried_at"] >= tried_before:
                return False
            row["tried_at"] = utc_now()
            return True

    def settle(self, notification_id: str, state: str, attempts: int, error: str | None = None) -> None:
        with self._lock:
            self.rows[notification_id].update(state=state, attempts=attempts, error=error)


class FakeNotificationSender:
    """Records every POST; fails the first `failures` of them (or all, with failures=-1)."""

    def __init__(self, failures: int = 0) -> None:
        self.posts: list[tuple[str, dict[str, str], bytes]] = []
        self.tries = 0
        self.failures = failures
        self._lock = threading.Lock()

    def post(self, url: str, headers: dict[str, str], body: bytes) -> None:
        from shared.service_layer.ports import DeliveryError

        with self._lock:
            self.tries += 1
            if self.failures < 0 or self.tries <= self.failures:
                raise DeliveryError("cannot connect to http://receiver.invalid")
            self.posts.append((url, headers, body))

class FakeQuarantineStore:
    def __init__(self) -> None:
        self.entries: dict[str, QuarantineEntry] = {}

    def put(self, entry: QuarantineEntry) -> None:
        self.entries[entry.digest] = copy.deepcopy(entry)

    def remove(self, digest: str) -> QuarantineEntry | None:
        return self.entries.pop(digest, None)

    def all(self) -> list[QuarantineEntry]:
        return [copy.deepcopy(e) for e in self.entries.values()]

class FakeSettlingStore:
    """Bases settling, etag-guarded as the table is (shared.adapters.settling_table)."""

    def __init__(self) -> None:
        self.rows: dict[str, Settling] = {}
        self.writes = 0

    def get(self, reference: str) -> Settling | None:
        row = self.rows.get(reference)
        return copy.deepcopy(row) if row else None

    def put(self, settling: Settling) -> None:
        current = self.rows.get(settling.reference)
        if (current.etag if current else None) != settling.etag:
            raise SettlingConflict(settling.reference)
        self.writes += 1
        stored = copy.deepcopy(settling)
        stored.etag = str(self.writes)
        self.rows[settling.reference] = stored

    def remove(self, settling: Settling) -> bool:
        current = self.rows.get(settling.reference)
        if current is None or current.etag != settling.etag:
            return False
        del self.rows[settling.reference]
        return True

    def all(self) -> list[Settling]:
        return [copy.deepcopy(r) for r in self.rows.values()]


class FakeRebaser:
    """Answers every rebase with `result`, or refuses it with `refusal` (then the run is rebuilt)."""

    def __init__(self) -> None:
        self.result = BuildResult(RunStatus.SUCCEEDED, output_digest="sha256:" + "b" * 64)
        self.refusal: str | None = None
        self.plans: list[RebasePlan] = []

    def rebase(self, request: BuildRequest, plan: RebasePlan, log: LogSink) -> BuildResult:
        self.plans.append(plan)
        if self.refusal:
            raise RebaseRefused(self.refusal)
        log(f"rebasing {plan.image} onto {plan.new_base}")
        return replace(self.result, base_digests={plan.base: plan.new_base.rpartition("@")[2]})


class FakeBaseRepository:
    """The poller's state, kept as the table keeps it."""

    def __init__(self) -> None:
        self.states: dict[str, BaseState] = {}
        self.swept: dict[str, datetime] = {}
        self.backoff: dict[str, RegistryBackoff] = {}

    def all(self) -> dict[str, BaseState]:
        return dict(self.states)

    def save_many(self, states: Iterable[BaseState]) -> None:
        self.states.update({s.base: s for s in states})

    def remove_many(self, bases: Iterable[str]) -> None:
        for base in bases:
            self.states.pop(base, None)

    def sweeps(self) -> dict[str, datetime]:
        return dict(self.swept)

    def save_sweeps(self, sweeps: dict[str, datetime]) -> None:
        self.swept.update(sweeps)

    def backoffs(self) -> dict[str, RegistryBackoff]:
        return dict(self.backoff)

    def save_backoff(self, backoff: RegistryBackoff) -> None:
        self.backoff[backoff.registry] = backoff


class FakeGitRemote:
    """Repositories' heads by (url, branch); an unknown one cannot be resolved."""

    def __init__(self) -> None:
        self.heads: dict[tuple[str, str | None], str] = {}

    def head(self, url: str, branch: str | None, token: str | None) -> RemoteHead:
        if (url, branch) not in self.heads:
            raise GitRemoteError(f"{url}: no branch {branch or '(default)'}")
        return RemoteHead(branch or "main", self.heads[(url, branch)])


class FakeRepositoryHeads:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], str] = {}

    def last(self, repository: str, branch: str) -> str | None:
        return self.rows.get((repository, branch))

    def advance(self, repository: str, branch: str, commit: str) -> None:
        self.rows[(repository, branch)] = commit


class FakeApp(ServiceLayer):
    """The service layer wired to the fakes above by shared.bootstrap, as the app is to Azure's
    adapters; each fake stays reachable under its own name for the tests to look at and steer."""

    # The fakes' own types, where the service layer knows only the ports.
    runs: FakeRunRepository
    task_store: FakeTaskRepository
    decisions: FakeDecisionLog
    claims: FakeDispatchClaims
    queue: FakeBuildQueue
    logs: FakeRunLogs
    sources: FakeSources
    registry: FakeRegistry
    base_states: FakeBaseRepository

    def __init__(self, work_dir: Path, registry: str = "localhost:5000", brakes: Brakes | None = None):
        runs = FakeRunRepository()
        self.table = FakeDependencyTable()
        self.wave_store = FakeWaveRepository(runs.ids)
        self.slots = FakeSlots()
        self.timer_slots = FakeTimerSlots()
        self.outbox = FakeNotificationOutbox()
        self.sender = FakeNotificationSender()
        # No settle window unless a test sets one (app.settling.settings = SettleSettings(...)).
        self.settling_store = FakeSettlingStore()
        decisions = FakeDecisionLog()
        self.claims = FakeDispatchClaims(decisions)
        # The lifecycle's private queue and a big wave's backlog, seen here only to watch them.
        self.queue = FakeBuildQueue()
        self.backlog = FakeRunBacklog()
        fake_builder, fake_rebaser = FakeBuilder(), FakeRebaser()
        fake_registry = FakeRegistry()
        super().__init__(Adapters(
            runs=runs, task_store=FakeTaskRepository(), dependencies=self.table, index_rows=self.table,
            decisions=decisions, claims=self.claims, queue=self.queue, backlog=self.backlog,
            logs=FakeRunLogs(),
            sources=FakeSources(),
            registry=fake_registry, images=fake_registry, image_stores=FakeImageStores(),
            wave_store=self.wave_store, slots=self.slots,
            timer_slots=self.timer_slots, quarantine_store=FakeQuarantineStore(),
            settling_store=self.settling_store,
            base_states=FakeBaseRepository(), outbox=self.outbox, sender=self.sender,
            git=FakeGitRemote(), heads=FakeRepositoryHeads(),
            builder=lambda: fake_builder, rebaser=lambda: fake_rebaser,
            # No waiting between retries: unit tests count tries, not seconds.
            wait=lambda seconds: None,
        ), Settings(
            storage=StorageSettings(), registry_host=registry, work_dir=str(work_dir),
            # Directory contexts are read in place under the test's own folder, as the local stack
            # does under its examples.
            local_context_roots=LocalContextRoots((work_dir.resolve(),)),
            brakes=brakes or Brakes(), build_timeout_seconds=60,
        ))
        self.builder: FakeBuilder = fake_builder
        self.rebaser: FakeRebaser = fake_rebaser
        # Heartbeats at once: tests of a run ended meanwhile need not wait for the next one.
        self.worker.heartbeat_seconds = 0.01
