"""The build worker: executes one queued run, exactly once in effect, and records how it ended.

Queue messages are delivered at least once. A run is claimed by moving it Queued -> Running with
an etag; while it builds, a heartbeat is written every few seconds. A redelivered message finds
either a finished run (nothing to do), a run with a fresh heartbeat (someone is building it: retry
later), or a run whose heartbeat went stale (its worker died: take it over). After the queue's
last attempt the poison handler fails the run with a reason, so no run stays Running forever.
A heartbeat never outlives its attempt: it is stopped and joined before the attempt's end is written.
The worker only builds and reports: how a run ended goes to the run's owner
(shared.service_layer.run_life's RunLifecycle), which also fails abandoned runs, and whose
housekeeping (`sweep`, every minute) sends the messages of released runs whose send failed and has a
run whose heartbeat went stale taken over when no message of it is left in the queue.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from shared.domain.builds import (
    BuildContext,
    BuildRequest,
    BuildResult,
    BuildSpec,
    ContextError,
    UploadGone,
    read_dockerfile,
)
from shared.domain.change_policy import Action
from shared.domain.dockerfile import secret_arg_warnings
from shared.domain.image_ref import ImageRef
from shared.domain.manifests import RegistryError
from shared.domain.rebase import (
    ADDS_ONLY,
    RebasePlan,
    RebaseRefused,
    build_annotations,
    final_base,
    final_stage_verdict,
)
from shared.domain.runs import Run, RunNotFound
from shared.domain.tasks import (
    Dependency,
    Task,
    TaskError,
    TaskNotFound,
    check_command,
    compute_dependencies,
)
from shared.domain.vocabulary import BaseChangePolicy, BuilderKind, RunStatus, Trigger, UpdatePolicy, utc_now
from shared.service_layer.base_changes import WaveChanges
from shared.service_layer.change_policy import ChangePolicies
from shared.service_layer.dependencies import DependencyIndex
from shared.service_layer.notifications import NoRunEvents
from shared.service_layer.ports import (
    BuilderFactory,
    Rebaser,
    Registry,
    RunEvents,
    RunLogs,
    RunRepository,
    Sources,
)
from shared.service_layer.run_life import RunLifecycle, heartbeat_is_fresh
from shared.service_layer.runs import transition
from shared.service_layer.tasks import TaskService

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 10  # well under run_life.STALE_AFTER: a live worker's run never looks abandoned
# How long a build's end waits for a heartbeat write in flight.
HEARTBEAT_JOIN_SECONDS = 30


class RetryLater(RuntimeError):
    """Another worker holds the run right now; the message should come back later."""


class RunFailed(Exception):
    """The run cannot build for a reason of its own (bad task, bad context): no retry helps."""


class _TaskChanged(Exception):
    """The archive a task run read from its task was deleted: the task was changed since."""


class Worker:
    def __init__(self, runs: RunRepository, tasks: TaskService, index: DependencyIndex, logs: RunLogs,
                 builder: BuilderFactory, sources: Sources, life: RunLifecycle,
                 work_dir: str, timeout_seconds: int, heartbeat_seconds: float = HEARTBEAT_SECONDS,
                 events: RunEvents | None = None,
                 changes: WaveChanges | None = None,
                 policies: ChangePolicies | None = None,
                 registry: Registry | None = None, rebaser: Rebaser | None = None):
        # Reads the bases' layers for the run record; None: they are not recorded.
        self.registry = registry
        # Rebases runs whose task's update policy asks for it; None: every run builds.
        self.rebaser = rebaser
        self.life = life  # the runs' owner: told how each run ended
        # Who hears of a run that starts (its end reaches them through the owner's `ended`).
        self.events: RunEvents = events or NoRunEvents()
        # What the base push of a run's wave changed, for the log header (best effort, bounded).
        self.changes = changes
        # Each task's base change policy, applied once the change is known (None: every run builds).
        self.policies = policies
        self.runs = runs
        self.tasks = tasks
        self.index = index
        self.logs = logs
        # Built on first use: the failure paths (poison, housekeeping) must work even when the
        # builder's configuration is broken.
        self._builder = builder
        self.sources = sources
        self.work_dir = Path(work_dir)
        self.timeout_seconds = timeout_seconds
        self.heartbeat_seconds = heartbeat_seconds

    # ---- claiming --------------------------------------------------------------------------
    def _claim(self, run_id: str, finished: list[Run]) -> Run | None:
        """The run, claimed for this attempt; None when there is nothing to build (a finished run
        is then put in `finished`)."""
        claimed: list[Run] = []

        def start(run: Run) -> Run | None:
            if run.finished:
                finished[:] = [run]
                return None
            if run.status == RunStatus.RUNNING and heartbeat_is_fresh(run):
                raise RetryLater(f"run {run_id} is being built by another worker")
            takeover = run.status == RunStatus.RUNNING
            run = replace(run, status=RunStatus.RUNNING, attempt=run.attempt + 1, heartbeat_at=utc_now(),
                          unsent_since=None,  # its message came
                          started_at=run.started_at or utc_now(),
                          reason="restarted after a worker stopped" if takeover else run.reason)
            claimed[:] = [run]
            return run

        transition(self.runs, run_id, start)
        return claimed[0] if claimed else None

    def _heartbeat(self, run: Run, stop: threading.Event, cancel: threading.Event) -> None:
        def beat(current: Run) -> Run | None:
            if current.status == RunStatus.CANCELED:
                cancel.set()  # the builder stops as soon as it sees this
            # Checked after each read, and the write is etag-guarded: a beat that read the run
            # before the build ended cannot land over what the end wrote (the crash handler's clear).
            if stop.is_set() or current.status != RunStatus.RUNNING or current.attempt != run.attempt:
                return None
            return replace(current, heartbeat_at=utc_now())

        while not stop.wait(self.heartbeat_seconds):
            try:
                transition(self.runs, run.run_id, beat)
            except Exception:  # a missed beat is not fatal; the next one may succeed
                log.warning("heartbeat for %s failed", run.run_id, exc_info=True)

    # ---- executing -------------------------------------------------------------------------
    def execute(self, run_id: str) -> Run | None:
        seen: list[Run] = []
        try:
            run = self._claim(run_id, seen)
        except RunNotFound:
            log.error("message for unknown run %s dropped", run_id)
            return None
        if run is None:
            log.info("run %s already finished; redelivery ignored", run_id)
            for done in seen:  # a quick build canceled before it started is only ever seen here
                self.life.remove_quick_upload(done)
            return None
        self.events.run_changed(run)  # its task's endpoint hears of the start (never raises or waits)

        stop, cancel = threading.Event(), threading.Event()
        beating = threading.Thread(target=self._heartbeat, args=(run, stop, cancel), daemon=True)
        beating.start()
        try:
            finished = self._build(run, cancel)
        except RunFailed as exc:
            self._stop_heartbeat(stop, beating)
            finished = self._finish(run, BuildResult(RunStatus.FAILED, reason=str(exc)))
        except Exception as exc:
            # The heartbeat ends before the clear: a fresh heartbeat after it would make the next
            # deliveries answer "being built by another worker" until it went stale.
            self._stop_heartbeat(stop, beating)
            self._release(run, f"attempt {run.attempt} crashed: {exc.__class__.__name__}")
            raise  # the queue redelivers; after its last attempt the poison handler fails the run
        finally:
            self._stop_heartbeat(stop, beating)
        # Its owner learns how it ended: what waited on it in its wave may start (housekeeping
        # redoes this after a crash here).
        self.life.ended(finished)
        return finished

    def _stop_heartbeat(self, stop: threading.Event, beating: threading.Thread) -> None:
        """Stop the heartbeat and wait for a beat in flight. A beat stuck on storage longer than
        that cannot land later anyway: it checks `stop` after each read and writes with the etag read."""
        stop.set()
        beating.join(timeout=HEARTBEAT_JOIN_SECONDS)

    def _release(self, run: Run, reason: str) -> None:
        """Let the next delivery take the run over at once instead of waiting for a stale heartbeat."""
        def release(current: Run) -> Run | None:
            if current.status != RunStatus.RUNNING or current.attempt != run.attempt:
                return None
            return replace(current, heartbeat_at=None, reason=reason)

        try:
            transition(self.runs, run.run_id, release)
        except Exception:  # storage may be what failed; the stale heartbeat covers that case
            log.warning("could not release run %s", run.run_id, exc_info=True)

    def _resolve(self, run: Run) -> tuple[BuildSpec, Task | None]:
        """What this run builds, read once (again only when the archive it read was replaced since):
        its task as it is now, or the quick build's own spec."""
        if run.task is None:
            if run.spec is None:
                raise RunFailed(f"run {run.run_id} has neither a task nor a build spec")
            return run.spec, None
        try:
            task = self.tasks.get(run.task)
        except TaskNotFound as exc:
            raise RunFailed(f"task {run.task!r} was deleted") from exc
        self.index.run_started(run.run_id, [d.image for d in task.dependencies], task.name)
        return task.build_spec(commit=run.commit), task  # a source trigger's commit, if any

    def _build(self, run: Run, cancel: threading.Event) -> Run:
        spec, task = self._resolve(run)
        try:
            return self._build_spec(run, spec, task, cancel)
        except _TaskChanged:
            # Read again, as a run started a moment later would: the change is built (with the
            # secrets and log mask it brings), not the archive it replaced.
            again, task = self._resolve(run)
            if again.source.upload == spec.source.upload:  # not a change: the archive is lost
                reason = (f"the context archive {spec.source.upload} of task {run.task!r} is gone: "
                          "send the directory again (basetrigger task update --context DIR)")
                write = self.logs.writer(run.run_id, again.secrets())
                write(f"error: {reason}")
                write.close()
                raise RunFailed(reason) from None
            return self._build_spec(run, again, task, cancel)

    def _build_spec(self, run: Run, spec: BuildSpec, task: Task | None, cancel: threading.Event) -> Run:
        write = self.logs.writer(run.run_id, spec.secrets())
        workspace = self.work_dir / "runs" / f"{run.run_id}-{run.attempt}"
        workspace.mkdir(parents=True, exist_ok=True)
        try:
            write(f"run {run.run_id} (attempt {run.attempt}): {run.trigger}"
                  + (f", caused by {run.cause}" if run.cause else ""))
            change = self.changes.note(run.wave_id) if self.changes and run.wave_id else None
            if change:
                write(f"base change: {change}")
            verdict = self.policies.judge(run, task, change) if self.policies else None
            if verdict is not None and task is not None and self.policies is not None \
                    and task.base_change_policy != BaseChangePolicy.ANY:
                write(f"base change policy {task.base_change_policy}: {verdict.reason}")
                if verdict.action == Action.SKIP:
                    self.policies.skip(run, task, verdict)
                    # On the new digest (before the run ends: a redelivery redoes both, idempotent).
                    self.tasks.record_build(task, self.policies.skipped_onto(run, task))
                    write(f"run {run.run_id} {RunStatus.CANCELED}: {verdict.reason}")
                    write.close()  # the whole log is stored before the run says it ended
                    return self._finish(run, BuildResult(RunStatus.CANCELED, reason=verdict.reason),
                                        update_decision=verdict.reason)
                if verdict.action == Action.HOLD and change:
                    write(f"run {run.run_id} {RunStatus.HELD}: its wave waits for `wave resume`")
                    write.close()
                    return self.policies.hold(run, task, verdict, change)
            # A rebase needs no sources: it is decided and done before any checkout or clone.
            rebased, decision = self._update_by_policy(run, task, spec, cancel, write)
            if decision and task is not None:
                write(f"update policy {task.update_policy}: {decision}")
            if rebased is not None and task is not None:
                result, kind, deps, built_from = rebased, BuilderKind.REBASE, task.dependencies, \
                    self._source_run(task)
            else:
                result, kind, deps, built_from = self._build_sources(run, spec, task, workspace, cancel,
                                                                     write)
            write(f"run {run.run_id} {result.status}" + (f": {result.reason}" if result.reason else ""))
        except (RunFailed, _TaskChanged):
            raise
        except Exception as exc:
            # The log says which attempt crashed; the queue's next delivery appends its own attempt.
            write(f"attempt {run.attempt} crashed: {exc.__class__.__name__}")
            raise
        finally:
            write.close()
            shutil.rmtree(workspace, ignore_errors=True)

        if result.status == RunStatus.SUCCEEDED:
            result = replace(result, base_layers=self._base_layers(result, spec))
        finished = self._finish(run, result, kind, decision, built_from)
        if task is not None and result.status == RunStatus.SUCCEEDED:
            built_on = [Dependency(d.image, result.base_digests.get(d.image, d.digest), d.runtime)
                        for d in deps]
            self.tasks.record_build(task, built_on)
        return finished

    def _build_sources(self, run: Run, spec: BuildSpec, task: Task | None, workspace: Path,
                       cancel: threading.Event, write: Callable[[str], None],
                       ) -> tuple[BuildResult, BuilderKind, list[Dependency], tuple[str | None, str | None]]:
        """Check the sources out and build them: the result, the builder, the bases, and what the
        auto rule says about the Dockerfile built (its final base, and `adds only` or why not)."""
        try:
            context_dir = self.sources.checkout(spec, workspace)
            dockerfile = read_dockerfile(context_dir, spec.dockerfile)
            deps = compute_dependencies(dockerfile, spec.build_args)
        except (ContextError, TaskError) as exc:
            write(f"error: {exc}")
            raise RunFailed(str(exc)) from exc
        except UploadGone as exc:
            if task is None:
                raise  # a quick build's own upload, removed only once its run has finished
            # The task's upload is deleted once a change replaced it (TaskService.update), and
            # this run read the task just before that change.
            write(f"{exc}: the task changed after this run read it; reading it again")
            raise _TaskChanged() from exc
        write("base images: " + (", ".join(d.image for d in deps) or "none"))
        builder = self._builder()
        as_build_args = builder.secret_args_as_build_args
        for warning in secret_arg_warnings(dockerfile, spec.secret_args, as_build_args):
            write(f"warning: {warning}")
        base = final_base(dockerfile, spec.build_args)
        request = BuildRequest(
            run_id=run.run_id,
            # A git source is named too: a builder that clones by itself (ACR) needs no upload.
            context=BuildContext(path=str(context_dir), git_url=spec.source.git_url,
                                 branch=spec.source.branch, git_token=spec.git_token,
                                 commit=spec.source.commit),
            dockerfile=spec.dockerfile,
            images=run.output_images,
            build_args=spec.build_args,
            secret_args=spec.secret_args,
            platform=spec.platform,
            credentials=spec.credentials,
            timeout_seconds=self.timeout_seconds,
            base_images=[d.image for d in deps],
            no_cache=run.force,
            cancel=cancel,
            still_ours=lambda: self._still_ours(run),
            builder_run_id=run.builder_run_id,
            record_builder_run=lambda builder_run_id: self._record_builder_run(run, builder_run_id),
            annotations=build_annotations(run.run_id, str(run.trigger), run.cause),
            final_base=base,
        )
        result = builder.build(request, write)
        verdict = final_stage_verdict(dockerfile, spec.build_args, base) if base else None
        return result, builder.kind, deps, (base, (verdict or ADDS_ONLY) if base else None)

    def _update_by_policy(self, run: Run, task: Task | None, spec: BuildSpec, cancel: threading.Event,
                          write: Callable[[str], None]) -> tuple[BuildResult | None, str | None]:
        """For a run a base update triggered: the rebased image's result when the task's update
        policy rebased it (None: build), and the decision, with why (None for other runs).

        The rule is applied to the Dockerfile the task's last image was built from, as its run
        recorded it (Run.final_base, Run.final_stage): that image is what a rebase moves."""
        if task is None or run.trigger != Trigger.IMAGE_UPDATE or not run.cause or "@" not in run.cause:
            return None, None
        policy = task.update_policy
        if policy == UpdatePolicy.REBUILD:
            return None, "rebuilt: update policy rebuild"
        changed, _, new_digest = run.cause.rpartition("@")
        last = self._last_run(task)
        if last is None:
            return None, "rebuilt: no earlier image of the task to rebase"
        if last.started_at is None or task.updated_at > last.started_at:
            # Its image may not be what the task builds now (another Dockerfile, args, context).
            return None, "rebuilt: the task changed after its last image was built"
        if last.final_base is None or last.final_stage is None:
            return None, "rebuilt: the last image's Dockerfile was not judged (built before rebase existed)"
        if last.final_base != changed:
            return None, f"rebuilt: the changed base {changed} is not the final stage's base"
        if policy == UpdatePolicy.AUTO and last.final_stage != ADDS_ONLY:
            return None, f"rebuilt: {last.final_stage}"
        if self.rebaser is None:
            return None, "rebuilt: this worker has no rebase builder"
        old_digest = last.base_digests.get(changed) or next(
            (d.digest for d in task.dependencies if d.image == changed), None)
        if not old_digest or not last.output_digest:
            return None, "rebuilt: the last image's base digest is unknown"
        name = ImageRef.parse(changed).name
        image = f"{ImageRef.parse(last.output_images[0]).name}@{last.output_digest}"
        plan = RebasePlan(base=changed, image=image, old_base=f"{name}@{old_digest}",
                          new_base=f"{name}@{new_digest}", prove_config=policy == UpdatePolicy.AUTO,
                          check=tuple(check_command(task.rebase_check)) if task.rebase_check else ())
        request = BuildRequest(run_id=run.run_id, context=BuildContext(path=""), dockerfile=spec.dockerfile,
                               images=run.output_images, platform=spec.platform, credentials=spec.credentials,
                               timeout_seconds=self.timeout_seconds, cancel=cancel,
                               still_ours=lambda: self._still_ours(run),
                               annotations=build_annotations(run.run_id, str(run.trigger), run.cause),
                               final_base=changed)
        try:
            result = self.rebaser.rebase(request, plan, write)
        except RebaseRefused as exc:
            return None, f"rebuilt: {exc}"
        except RegistryError as exc:  # nothing was tagged yet: the build does it the long way
            return None, f"rebuilt: the rebase could not use the registry: {exc}"
        if policy == UpdatePolicy.AUTO:
            return result, ("rebased: the final stage only adds files and metadata, and the base "
                            "changed only its layers")
        return result, "rebased: update policy rebase"

    def _last_run(self, task: Task) -> Run | None:
        """The task's newest run that pushed an image: what a rebase starts from."""
        runs, _ = self.runs.newest(task=task.name, status=RunStatus.SUCCEEDED, top=1)
        return next((r for r in runs if r.output_digest and r.output_images), None)

    def _source_run(self, task: Task) -> tuple[str | None, str | None]:
        """A rebased image has the Dockerfile of the image it was made from."""
        last = self._last_run(task)
        return (last.final_base, last.final_stage) if last else (None, None)

    def _base_layers(self, result: BuildResult, spec: BuildSpec) -> dict[str, list[str]]:
        """Each base's layers as the run built on them (what a later rebase checks the image against)."""
        found = dict(result.base_layers)
        if self.registry is None:
            return found
        for base, digest in result.base_digests.items():
            if base in found:
                continue
            try:
                found[base] = self.registry.base_layers(f"{ImageRef.parse(base).name}@{digest}",
                                                        spec.platform, spec.credentials)
            except RegistryError as exc:
                log.info("cannot read the layers of %s: %s", base, exc)
        return found

    def _still_ours(self, run: Run) -> bool:
        """Is this attempt still the one the run record names (not canceled, not taken over)?"""
        current, _ = self.runs.get(run.run_id)
        return current.status == RunStatus.RUNNING and current.attempt == run.attempt

    def _record_builder_run(self, run: Run, builder_run_id: str) -> bool:
        """Keeps the builder's run id on the run record (the next attempt follows that build rather
        than starting another); False when this attempt is no longer the run's."""
        kept = False

        def keep(current: Run) -> Run | None:
            nonlocal kept
            kept = current.status == RunStatus.RUNNING and current.attempt == run.attempt
            return replace(current, builder_run_id=builder_run_id) if kept else None

        transition(self.runs, run.run_id, keep)
        return kept

    def _finish(self, run: Run, result: BuildResult, builder: BuilderKind | None = None,
                update_decision: str | None = None,
                built_from: tuple[str | None, str | None] = (None, None)) -> Run:
        fields: dict[str, Any] = {"reason": result.reason, "output_digest": result.output_digest,
                                  "base_digests": result.base_digests or None,
                                  "base_layers": result.base_layers or None,
                                  "builder": str(builder) if builder else None,
                                  "update_decision": update_decision,
                                  "final_base": built_from[0], "final_stage": built_from[1]}

        def finish(current: Run) -> Run | None:
            if current.finished:
                return None  # canceled meanwhile: the cancel stands
            if current.attempt != run.attempt:
                return None  # another worker took the run over; its outcome is the one recorded
            now = utc_now()
            # A builder that cannot tell when it pushed (ACR) pushed before it reported success.
            pushed_at = (result.pushed_at or now) if result.output_digest and \
                result.status == RunStatus.SUCCEEDED else None
            return replace(current, status=result.status, finished_at=now,
                           built_at=result.built_at, pushed_at=pushed_at,
                           **{k: v for k, v in fields.items() if v is not None})

        return transition(self.runs, run.run_id, finish)
