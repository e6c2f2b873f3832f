"""The ports: what the service layer needs from storage, queues, registries and builders.

Each is a small `Protocol`. The adapters in `shared.adapters` implement them on Azure Storage, the
registry API, git and buildah/ACR; `tests/fakes.py` implements them in memory for unit tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from shared.domain.builds import BuildRequest, BuildResult, BuildSpec, LogSink
from shared.domain.credentials import RegistryCredential
from shared.domain.decisions import Decision
from shared.domain.dependencies import DeferredClaim, DependencyRow
from shared.domain.git_polling import RemoteHead
from shared.domain.manifests import ManifestInfo, RawManifest
from shared.domain.notifications import Notification
from shared.domain.poll_state import BaseState, RegistryBackoff
from shared.domain.rebase import RebasePlan
from shared.domain.runs import Run, RunIds
from shared.domain.task_links import TaskLinks
from shared.domain.tasks import Dependency, Task
from shared.domain.vocabulary import BuilderKind, RunStatus
from shared.domain.waves import Member, Wave


class RunRepository(Protocol):
    ids: RunIds

    def allocate(self, count: int) -> list[str]:
        """Reserve `count` new, never reused run ids."""

    def create_many(self, runs: list[Run]) -> None: ...

    def create_absent(self, runs: list[Run]) -> None:
        """Insert the runs that are not stored yet; a run (or copy) already there is left as it is,
        however it changed since: a late or repeated insert never turns a run back."""

    def get(self, run_id: str) -> tuple[Run, str]:
        """The run and its etag; RunNotFound if there is none."""

    def save(self, run: Run, etag: str | None) -> str:
        """Write the run; with an etag only if unchanged since (else RunConflict). The new etag."""

    def newest(self, *, top: int = 15, task: str | None = None, status: RunStatus | None = None,
             image: str | None = None, after: str | None = None) -> tuple[list[Run], str | None]:
        """Newest first, and the continuation (the last run id) when there may be more."""

    def producer_of(self, image: str) -> Run | None:
        """The newest run that names `image` among its outputs."""

    def in_status(self, status: RunStatus) -> list[Run]: ...


class RunReader(Protocol):
    """What readers of runs need: RunRepository's reads, or shared.service_layer.run_life's
    RunReads, which also shows the runs of a wave planned but not recorded yet."""

    def get(self, run_id: str) -> tuple[Run, str]: ...

    def newest(self, *, top: int = 15, task: str | None = None, status: RunStatus | None = None,
               image: str | None = None, after: str | None = None) -> tuple[list[Run], str | None]: ...


@dataclass
class BacklogRecord:
    """What a big wave planned and left to be written after its push answered: its waiting runs,
    its members (with their ready marks) that were not released at once, and its push's claims on
    index rows."""

    runs: list[Run] = field(default_factory=list)
    members: list[Member] = field(default_factory=list)
    claims: list[DeferredClaim] = field(default_factory=list)


class RunBacklog(Protocol):
    """A wave's runs and members planned but not recorded yet, and its push's index-row claims not
    written yet: one record per wave, written once before the wave's row, removed when all of it is
    written (shared.service_layer.run_life)."""

    def put(self, wave_id: str, runs: list[Run], members: Sequence[Member] = (),
            claims: Sequence[DeferredClaim] = ()) -> None: ...

    def get(self, wave_id: str) -> list[Run]:
        """[] when the wave has no backlog (never had one, or it was recorded)."""

    def get_record(self, wave_id: str) -> BacklogRecord:
        """Its runs, members and claims; all empty when the wave has no backlog."""

    def waves(self) -> list[str]:
        """The waves that have a backlog now (one listing)."""

    def remove(self, wave_id: str) -> None:
        """No error when it is gone already."""


class TaskRepository(Protocol):
    """Tasks by name. Every task read carries its stored version in `Task.etag`; each write
    changes it."""

    def get(self, name: str) -> Task:
        """TaskNotFound if there is none."""

    def graph(self) -> tuple[list[Task], str]:
        """Every task, and the version of the task graph they form (an etag) as of that read."""

    def create(self, task: Task, graph_version: str | None = None) -> str:
        """TaskExists if the name is taken. The new task's etag. With `graph_version`, the task is
        written, and the graph version moved on, in one step, only if the graph is still at that
        version (else GraphChanged): a cycle check on what `graph()` read holds for what is written."""

    def save(self, task: Task, etag: str | None = None, graph_version: str | None = None) -> str:
        """Replace a stored task, never insert one (TaskNotFound if it is gone: a change racing a
        delete must not bring the task back); with `etag`, only if the stored task is still at that
        version (else TaskChanged), decided by the storage in the write itself; with
        `graph_version`, as `create`. The new etag."""

    def set_dependencies(self, name: str, deps: list[Dependency]) -> None:
        """Change only the dependencies (TaskNotFound if the task is gone)."""

    def delete(self, name: str, etag: str | None = None) -> None:
        """Delete the task (one that is gone already is no error); with `etag`, only if it is
        still at that version (else TaskChanged)."""

    def all(self) -> list[Task]: ...

    def links(self) -> list[TaskLinks]:
        """Every task's name, images, trigger and bases (the dependency graph), in one read."""


class DependencyTable(Protocol):
    """The stored rows of the dependency index (written only by service_layer.dependencies)."""

    def dependents(self, base: str) -> list[DependencyRow]: ...

    def changed_since(self, base: str, since: datetime) -> list[DependencyRow]:
        """The base's rows written at `since` or later (by the storage's clock)."""

    def get(self, base: str, task: str) -> DependencyRow | None: ...

    def put_task_fields(self, row: DependencyRow) -> None:
        """Write what the task defines (trigger, images, runtime; the built digest when known),
        leaving the dispatch state as it is."""

    def put_build_fields(self, row: DependencyRow) -> None:
        """Write what a build found (runtime flag, built digest) onto an existing row only."""

    def remove(self, base: str, task: str) -> None: ...

    def claim(self, rows: list[DependencyRow]) -> tuple[list[DependencyRow], list[DependencyRow]]:
        """Write each row's dispatch state where the row is unchanged since read: (won, lost)."""

    def update_if_unchanged(self, row: DependencyRow) -> bool:
        """Write one row's dispatch state unless it changed since it was read."""


class WaveRepository(Protocol):
    def create(self, wave: Wave, members: list[Member]) -> None:
        """The wave, its members, and the ready marks of members that wait for nothing."""

    def create_absent(self, members: list[Member]) -> None:
        """Members planned earlier (a big wave's backlog), each only if absent: a member written
        since keeps its change. A ready mark goes with each one ready and unreleased as stored."""

    def get(self, wave_id: str) -> tuple[Wave, str]:
        """The wave and its etag; WaveNotFound if there is none."""

    def save(self, wave: Wave, etag: str) -> str:
        """Write the wave if unchanged since read (else WaveConflict)."""

    def newest(self, top: int = 15, after: str | None = None) -> tuple[list[Wave], str | None]: ...

    def active(self) -> list[Wave]:
        """Waves whose runs may still be released (Active)."""

    def members(self, wave_id: str) -> list[Member]: ...

    def member(self, wave_id: str, task: str) -> Member | None: ...

    def add_member(self, member: Member) -> bool:
        """Add a member found after the plan (False if the task is a member already)."""

    def save_member(self, member: Member) -> bool:
        """Write the member if unchanged since read (its etag); False if it changed."""

    def mark_ready(self, member: Member) -> None:
        """List the member among the wave's runs ready to release (idempotent)."""

    def ready(self, wave_id: str, limit: int) -> list[Member]:
        """Ready, unreleased members: lowest level first, then oldest run."""

    def unmark_ready(self, member: Member) -> None: ...


class Slots(Protocol):
    """Places for running builds: taking one is atomic, so a cap holds under any concurrency."""

    def take(self, scope: str, cap: int, run_id: str, first: int | None = None, sole: bool = False) -> bool:
        """One of `cap` places of `scope` for `run_id` (idempotent per run); False when all are taken.
        `first`: the place to try first without reading the scope (a new wave's places are free).
        `sole`: no one else can take a place for this run now (a new wave's run, before its wave
        is written), so two takes for it cannot race and none is looked for afterwards."""

    def give_back(self, scope: str, run_id: str) -> None: ...

    def holders(self, scope: str) -> list[str]:
        """The run ids holding places of `scope`."""

    def taken_at(self, scope: str) -> dict[str, datetime]:
        """When each run holding a place of `scope` took it."""


class DecisionLog(Protocol):
    """The decisions taken on events, newest first, and which event each decided."""

    def seen(self, event_id: str) -> Decision | None:
        """The decision already taken on this event, if any (redelivery)."""

    def record(self, decision: Decision, mark_seen: bool = True) -> None:
        """Store the decision; `mark_seen` also marks its event as decided (which ends its claim)."""

    def recent(self, top: int = 20, image: str | None = None) -> list[Decision]: ...


class DispatchClaims(Protocol):
    """Who is dispatching what right now: an event id is claimed by one delivery at a time, and a
    base (dispatch holds `registry/repository`: every tag and digest of it) by one dispatch at a
    time, whatever its event id. A claim ends when its decision is recorded (DecisionLog.record)
    or it is abandoned."""

    def begin(self, event_id: str) -> Decision | None:
        """Claim the event for this delivery: None to dispatch it, the Decision if it was handled
        already; EventBusy while another delivery dispatches it."""

    def abandon(self, event_id: str) -> None:
        """Give up a claim this delivery could not complete (the next delivery claims at once)."""

    def hold_push(self, push: str) -> str:
        """Hold `push` (any key; dispatch gives the base's `registry/repository`) while this
        delivery dispatches it, whatever its event id, so deliveries of one push under several ids
        (two ingresses) dispatch one after the other and the later ones allocate nothing, and no
        two dispatches of one base claim its rows at once. Returns the hold's token; EventBusy
        while another holds it."""

    def release_push(self, push: str, token: str) -> None:
        """Let go of a hold (one taken over by another delivery since is left alone)."""


class BuildQueue(Protocol):
    def send(self, run_ids: list[str]) -> None:
        """One message per run id; raises if any send failed."""

    def is_empty(self) -> bool: ...


class LogWriter(Protocol):
    def __call__(self, line: str) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None:
        """Flush what is left; nothing is written after."""


class RunLogs(Protocol):
    def writer(self, run_id: str, secrets: list[str]) -> LogWriter: ...

    def read(self, run_id: str, offset: int = 0) -> bytes: ...


class Sources(Protocol):
    """Build sources: uploads kept for quick builds and task contexts, and checkouts of any source
    into a folder."""

    def upload(self, name: str, archive: bytes) -> None: ...

    def remove(self, name: str) -> None:
        """Delete the upload `name`; one that is not there is no error (requests are retried)."""

    def checkout(self, spec: BuildSpec, workspace: Path) -> Path:
        """The context directory of `spec` (inside `workspace` unless it is a local directory);
        ContextError when it cannot be had, UploadGone when its upload is not in storage."""


class Registry(Protocol):
    """Reading registries (shared.adapters.registry): every digest basetrigger records comes from here."""

    def resolve_digest(self, reference: str, platform: str | None = None,
                       credentials: Sequence[RegistryCredential] = ()) -> str | None:
        """The digest a build of `platform` FROM `reference` uses now (a manifest list's entry for
        that platform), or None when the registry cannot tell."""

    def inspect(self, reference: str, credentials: Sequence[RegistryCredential] = (),
                with_platforms: bool = False) -> ManifestInfo:
        """The manifest `reference` points at; RegistryError says why when it cannot be read."""

    def base_layers(self, reference: str, platform: str | None = None,
                    credentials: Sequence[RegistryCredential] = ()) -> list[str]:
        """The layer digests of the manifest a build of `platform` FROM `reference` uses
        (RegistryError when it cannot be read)."""


class Builder(Protocol):
    # True: secret args reach the build as build args (ACR); False: only as build secrets (buildah).
    secret_args_as_build_args: bool
    kind: BuilderKind

    def build(self, request: BuildRequest, log: LogSink) -> BuildResult: ...

    def cancel(self, run: Run) -> str | None:
        """Stop the build an attempt of `run` started in the builder (`run.builder_run_id`), for a
        run ended while no worker may be following it; without waiting for it to stop. Never raises:
        None when it was stopped or there was nothing to stop, else why it may still push."""


BuilderFactory = Callable[[], Builder]


class Rebaser(Protocol):
    """Moves the task's last image onto a new base without a build (shared.adapters.builders.rebase)."""

    def rebase(self, request: BuildRequest, plan: RebasePlan, log: LogSink) -> BuildResult:
        """The rebased image pushed under the run's tags; RebaseRefused when it must be rebuilt."""


class IndexScan(Protocol):
    """Every row of the dependency index (the poller reads which bases are in use, once a cycle)."""

    def every_row(self) -> list[DependencyRow]: ...


class BaseRepository(Protocol):
    """The poller's state: each base as last seen, when each registry's bases were last checked
    (a base's own row is written only when what it shows changes), and registries it backs off from."""

    def all(self) -> dict[str, BaseState]: ...

    def save_many(self, states: Iterable[BaseState]) -> None: ...

    def remove_many(self, bases: Iterable[str]) -> None: ...

    def sweeps(self) -> dict[str, datetime]: ...

    def save_sweeps(self, sweeps: dict[str, datetime]) -> None: ...

    def backoffs(self) -> dict[str, RegistryBackoff]: ...

    def save_backoff(self, backoff: RegistryBackoff) -> None: ...


class TimerSlots(Protocol):
    """The last slot started for each task timer (shared.service_layer.timers)."""

    def last(self, task: str, timer: str) -> datetime | None: ...

    def advance(self, task: str, timer: str, slot: datetime) -> None:
        """Record `slot` as started unless a later one is recorded already (never moves back)."""


class RunEvents(Protocol):
    """Hears of a run that started, ended or was held (notifications, Event Grid). Must never raise
    and never wait on the network: it is called on the build's own path."""

    def run_changed(self, run: Run) -> None: ...


class NotificationOutbox(Protocol):
    """Notifications not yet delivered, stored before they are sent (a crash leaves them pending)."""

    def add(self, notification: Notification) -> bool:
        """Store it as pending; False when it was stored before (a redelivered run's)."""

    def stale(self, tried_before: datetime) -> list[Notification]:
        """Pending ones last tried before that time (their sender is gone)."""

    def claim(self, notification_id: str, tried_before: datetime) -> bool:
        """Note a new try, unless another sender tried since `tried_before` (then False)."""

    def settle(self, notification_id: str, state: str, attempts: int, error: str | None = None) -> None:
        """Record how it ended: delivered, failed (every retry) or dropped (no endpoint any more)."""


class DeliveryError(RuntimeError):
    """An endpoint did not take a notification; str() names no part of its URL but the host."""


class NotificationSender(Protocol):
    def post(self, url: str, headers: dict[str, str], body: bytes) -> None:
        """POST within bounded timeouts; DeliveryError unless answered with a 2xx."""


class RunEventPublisher(Protocol):
    def publish(self, event_id: str, event_type: str, subject: str, data: dict[str, Any]) -> None:
        """Publish one event (the SDK retries); raises when it could not."""


class GitRemote(Protocol):
    def head(self, url: str, branch: str | None, token: str | None) -> RemoteHead:
        """What `branch` (None: the default branch) points at now; GitRemoteError if unknown."""


class RepositoryHeads(Protocol):
    """The last head the poller acted on, per repository and branch (kept across restarts)."""

    def last(self, repository: str, branch: str) -> str | None: ...

    def advance(self, repository: str, branch: str, commit: str) -> None: ...


class ImageStore(Protocol):
    """One registry's manifests, read and written (`--rollback` puts an earlier one back)."""

    def manifest(self, reference: str) -> RawManifest: ...

    def put_manifest(self, reference: str, body: bytes, media_type: str) -> str: ...


class ImageStores(Protocol):
    """Manifests of a registry, read and written as a task signs in (shared.adapters.registry)."""

    def images(self, reference: str, credentials: Sequence[RegistryCredential] = ()) -> ImageStore: ...
