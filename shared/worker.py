"""The build worker: executes one queued run, exactly once in effect, and records how it ended.

Queue messages are delivered at least once. A run is claimed by moving it Queued -> Running with
an etag; while it builds, a heartbeat is written every few seconds. A redelivered message finds
either a finished run (nothing to do), a run with a fresh heartbeat (someone is building it: retry
later), or a run whose heartbeat went stale (its worker died: take it over). After the queue's
last attempt the poison handler fails the run with a reason, so no run stays Running forever.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from shared import contexts
from shared.builders.base import BuildContext, Builder, BuildRequest
from shared.dependencies import DependencyIndex
from shared.run_logs import RunLogs
from shared.runs import (
    CANCELED,
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    TERMINAL,
    Run,
    RunNotFound,
    RunStore,
    now,
)
from shared.storage import Storage
from shared.tasks import Dependency, Task, TaskError, TaskNotFound, TaskService, compute_dependencies
from shared.work_queue import BuildQueue

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 10
STALE_AFTER = timedelta(seconds=35)
# Runs whose worker stopped reporting for this long are failed by housekeeping.
ABANDONED_AFTER = timedelta(minutes=10)


class RetryLater(RuntimeError):
    """Another worker holds the run right now; the message should come back later."""


class RunFailed(Exception):
    """The run cannot build for a reason of its own (bad task, bad context): no retry helps."""


def heartbeat_is_fresh(run: Run) -> bool:
    return bool(run.heartbeat_at) and now() - run.heartbeat_at < STALE_AFTER


class Worker:
    def __init__(self, runs: RunStore, tasks: TaskService, index: DependencyIndex, logs: RunLogs,
                 builder: Callable[[], Builder], storage: Storage, work_dir: str, timeout_seconds: int,
                 queue: BuildQueue):
        self.runs = runs
        self.tasks = tasks
        self.index = index
        self.logs = logs
        # Built on first use: the failure paths (poison, housekeeping) must work even when the
        # builder's configuration is broken.
        self._builder = builder
        self.queue = queue
        self.storage = storage
        self.work_dir = Path(work_dir)
        self.timeout_seconds = timeout_seconds

    # ---- claiming --------------------------------------------------------------------------
    def _claim(self, run_id: str) -> Run | None:
        claimed: list[Run] = []

        def start(run: Run) -> Run | None:
            if run.status in TERMINAL:
                return None
            if run.status == RUNNING and heartbeat_is_fresh(run):
                raise RetryLater(f"run {run_id} is being built by another worker")
            takeover = run.status == RUNNING
            run = replace(run, status=RUNNING, attempt=run.attempt + 1, heartbeat_at=now(),
                          started_at=run.started_at or now(),
                          reason="restarted after a worker stopped" if takeover else run.reason)
            claimed[:] = [run]
            return run

        self.runs.transition(run_id, start)
        return claimed[0] if claimed else None

    def _release_pending(self, run: Run, task: Task) -> None:
        """The run has started: later pushes must queue a new run instead of coalescing into it."""
        for dep in task.dependencies:
            row = self.index.get(dep.image, task.name)
            if row and row.pending_run_id == run.run_id:
                row.pending_run_id = None
                self.index.update_if_unchanged(row)

    def _heartbeat(self, run: Run, stop: threading.Event, cancel: threading.Event) -> None:
        def beat(current: Run) -> Run | None:
            if current.status == CANCELED:
                cancel.set()  # the builder stops as soon as it sees this
            if current.status != RUNNING or current.attempt != run.attempt:
                return None
            return replace(current, heartbeat_at=now())

        while not stop.wait(HEARTBEAT_SECONDS):
            try:
                self.runs.transition(run.run_id, beat)
            except Exception:  # a missed beat is not fatal; the next one may succeed
                log.warning("heartbeat for %s failed", run.run_id, exc_info=True)

    # ---- executing -------------------------------------------------------------------------
    def execute(self, run_id: str) -> Run | None:
        try:
            run = self._claim(run_id)
        except RunNotFound:
            log.error("message for unknown run %s dropped", run_id)
            return None
        if run is None:
            log.info("run %s already finished; redelivery ignored", run_id)
            return None

        stop, cancel = threading.Event(), threading.Event()
        threading.Thread(target=self._heartbeat, args=(run, stop, cancel), daemon=True).start()
        try:
            finished = self._build(run, cancel)
        except RunFailed as exc:
            finished = self._finish(run.run_id, run.attempt, FAILED, reason=str(exc))
        except Exception as exc:
            stop.set()
            self._release(run, f"attempt {run.attempt} crashed: {exc.__class__.__name__}")
            raise  # the queue redelivers; after its last attempt the poison handler fails the run
        finally:
            stop.set()
        return finished

    def _release(self, run: Run, reason: str) -> None:
        """Let the next delivery take the run over at once instead of waiting for a stale heartbeat."""
        def release(current: Run) -> Run | None:
            if current.status != RUNNING or current.attempt != run.attempt:
                return None
            return replace(current, heartbeat_at=None, reason=reason)

        try:
            self.runs.transition(run.run_id, release)
        except Exception:  # storage may be what failed; the stale heartbeat covers that case
            log.warning("could not release run %s", run.run_id, exc_info=True)

    def _prepare_context(self, run: Run, task: Task | None, workspace: Path) -> Path:
        if task is None:
            archive = workspace / "context.tar.gz"
            blob = self.storage.container("build-contexts").get_blob_client(run.spec["context_blob"])
            with archive.open("wb") as handle:
                blob.download_blob().readinto(handle)
            return contexts.extract_archive(archive, workspace / "context")
        if task.is_git:
            return contexts.clone(task.context, task.branch, task.git_token, workspace / "context")
        return contexts.local_dir(task.context)

    def _build(self, run: Run, cancel: threading.Event) -> Run:
        task: Task | None = None
        if run.task:
            try:
                task = self.tasks.store.get(run.task)
            except TaskNotFound as exc:
                raise RunFailed(f"task {run.task!r} was deleted") from exc
            self._release_pending(run, task)
        dockerfile = task.dockerfile if task else run.spec.get("dockerfile", "Dockerfile")
        build_args = task.build_args if task else run.spec.get("build_args", {})
        secret_args = task.secret_args if task else {}
        secrets = list(secret_args.values()) + ([task.git_token] if task and task.git_token else [])
        write = self.logs.writer(run.run_id, secrets)
        workspace = self.work_dir / "runs" / f"{run.run_id}-{run.attempt}"
        workspace.mkdir(parents=True, exist_ok=True)
        try:
            write(f"run {run.run_id} (attempt {run.attempt}): {run.trigger}"
                  + (f", caused by {run.cause}" if run.cause else ""))
            try:
                context_dir = self._prepare_context(run, task, workspace)
                text = contexts.read_dockerfile(context_dir, dockerfile)
                deps = compute_dependencies(text, build_args)  # never secrets: see TaskService
            except (contexts.ContextError, TaskError) as exc:
                write(f"error: {exc}")
                raise RunFailed(str(exc)) from exc
            write("base images: " + (", ".join(d.image for d in deps) or "none"))
            request = BuildRequest(
                run_id=run.run_id,
                context=BuildContext(path=str(context_dir)),
                dockerfile=dockerfile,
                images=run.output_images,
                build_args=build_args,
                secret_args=secret_args,
                platform=(task.platform if task else "linux"),
                timeout_seconds=self.timeout_seconds,
                base_images=[d.image for d in deps],
                no_cache=run.force,
                cancel=cancel,
            )
            result = self._builder().build(request, write)
            write(f"run {run.run_id} {result.status}" + (f": {result.reason}" if result.reason else ""))
        finally:
            write.flush()
            contexts.remove(workspace)

        finished = self._finish(run.run_id, run.attempt, result.status, reason=result.reason,
                                output_digest=result.output_digest, base_digests=result.base_digests)
        if task is not None and result.status == SUCCEEDED:
            built_on = [Dependency(d.image, result.base_digests.get(d.image), d.runtime) for d in deps]
            self.tasks.record_build(task.name, built_on)
        return finished

    def _finish(self, run_id: str, attempt: int, status: str, **fields) -> Run:
        def finish(run: Run) -> Run | None:
            if run.status in TERMINAL:
                return None  # canceled meanwhile: the cancel stands
            if run.attempt != attempt:
                return None  # another worker took the run over; its outcome is the one recorded
            return replace(run, status=status, finished_at=now(),
                           **{k: v for k, v in fields.items() if v is not None})

        return self.runs.transition(run_id, finish)

    # ---- failure paths ---------------------------------------------------------------------
    def fail_abandoned(self, run_id: str, reason: str) -> Run | None:
        """The queue gave up on this run's message: fail it unless a worker is still on it."""
        def fail(run: Run) -> Run | None:
            if run.status in TERMINAL or (run.status == RUNNING and heartbeat_is_fresh(run)):
                return None
            return replace(run, status=FAILED, finished_at=now(), reason=reason)

        try:
            run = self.runs.transition(run_id, fail)
        except RunNotFound:
            return None
        return run if run.status == FAILED and run.reason == reason else None

    def sweep(self) -> list[str]:
        """Housekeeping: fail runs whose worker went silent, re-send runs that wait too long."""
        failed = []
        for run in self.runs.in_status(RUNNING):
            last_sign = run.heartbeat_at or run.started_at or run.created_at
            if now() - last_sign > ABANDONED_AFTER:
                if self.fail_abandoned(run.run_id, "the worker stopped reporting") is not None:
                    failed.append(run.run_id)
        # Queued runs while the queue is empty have lost their message (a send that failed after
        # the run was recorded). Only then: a long backlog is not re-sent over and over.
        if self.queue.is_empty():
            stale = [run.run_id for run in self.runs.in_status(QUEUED)
                     if now() - run.created_at > ABANDONED_AFTER]
            self.queue.send(stale)
        return failed
