"""Runs asked for by people: manual task runs, quick builds, cancellations, and the list of runs."""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import replace
from typing import Any

from shared.domain.builds import BuildSpec, Source, UnpackLimits, check_archive
from shared.domain.dependencies import DependencyRow
from shared.domain.runs import Run, RunNotCancelable, RunNotFound
from shared.domain.tasks import Task, TaskError
from shared.domain.vocabulary import RunStatus, Trigger, utc_now
from shared.service_layer.ports import BuilderFactory, RunRepository, Sources, TaskRepository
from shared.service_layer.quarantine import QuarantineList
from shared.service_layer.run_life import RunLifecycle
from shared.service_layer.runs import cancel_builder_run

# Uploaded contexts larger than this are refused (the API's body limit is a little above it).
MAX_CONTEXT_BYTES = 50 * 1024 * 1024


class InvalidContinuation(ValueError):
    """A continuation that is no run id of a previous page: the caller's mistake, not a missing run."""


class Scheduler:
    def __init__(self, tasks: TaskRepository, runs: RunRepository, life: RunLifecycle, sources: Sources,
                 unpack_limits: UnpackLimits, builder: BuilderFactory,
                 quarantine: QuarantineList | None = None):
        # The runs' owner: records, releases and sends the runs decided on here.
        self.life = life
        self.waves = life.waves
        self.quarantine = quarantine
        self.builder = builder
        self.unpack_limits = unpack_limits
        self.tasks = tasks
        self.runs = runs
        self.sources = sources

    def run_task(self, name: str, force: bool = False) -> Run:
        """A manual run (`az acr task run`). `force` is recorded: the builder pulls bases anew."""
        task = self.tasks.get(name)
        if self.quarantine is not None:
            self.quarantine.check_task(task)  # Quarantined: `quarantined: <reason>`, no run id spent
        return self._start(task, Trigger.MANUAL, "manual run", force=force)

    def start_run(self, task: Task, trigger: Trigger, root: str, **fields: Any) -> Run:
        """A run of `task` that starts at once (a timer's slot, a commit): `root` names what started
        it in its wave; `fields` go to the run (cause, event_id, commit…). Quarantined, before a run
        id is spent, when a base of the task points at a quarantined digest (the caller records
        the refusal under its event's id)."""
        if self.quarantine is not None:
            self.quarantine.check_task(task, record=False)
        return self._start(task, trigger, root, **fields)

    def _start(self, task: Task, trigger: Trigger, root: str, **fields: Any) -> Run:
        (run_id,) = self.life.allocate(1)
        run = self.life.new_run(run_id, trigger, task.images, task=task.name, platform=task.platform,
                                **fields)
        # A wave of its own: it starts at once (no cap), and what is built on its output follows
        # in order, once, within the caps.
        as_root = DependencyRow(base="", task=task.name, runtime=True, trigger_enabled=True,
                                trigger_type=task.trigger_type, images=list(task.images))
        self.waves.start(f"{root} {run_id}", fields.get("event_id"), {task.name: run}, [as_root],
                         released=[run_id])
        return run

    def quick_build(self, image_templates: list[str], context_b64: str, dockerfile: str = "Dockerfile",
                    build_args: dict[str, str] | None = None, platform: str = "linux") -> Run:
        """`az acr build`: an uploaded context, built once, no task."""
        if not image_templates:
            raise TaskError("a build needs at least one image")
        try:
            archive = base64.b64decode(context_b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise TaskError("context must be a base64-encoded .tar.gz archive") from exc
        if len(archive) > MAX_CONTEXT_BYTES:
            raise TaskError(f"the context archive exceeds {MAX_CONTEXT_BYTES // (1024 * 1024)} MiB")
        try:
            self.life.check_templates(image_templates)  # before a run id is spent
        except ValueError as exc:
            raise TaskError(str(exc)) from exc
        check_archive(archive, self.unpack_limits)  # ContextTooLarge: refused before anything is kept
        # The same rules as a task's, before a run id is spent: readable names, a known platform.
        Task(name="build", images=list(image_templates), context="build", dockerfile=dockerfile,
             build_args=dict(build_args or {}), platform=platform).validate()
        (run_id,) = self.life.allocate(1)
        upload = f"{run_id}-{uuid.uuid4().hex[:8]}.tar.gz"
        self.sources.upload(upload, archive)
        spec = BuildSpec(source=Source(upload=upload), dockerfile=dockerfile,
                         build_args=dict(build_args or {}), platform=platform)
        run = self.life.new_run(run_id, Trigger.MANUAL, image_templates, spec=spec, platform=spec.platform)
        self.life.launch([run])
        return run

    def cancel(self, run_id: str) -> Run:
        """Cancel a run that has not finished. A worker building it sees the cancel at its next
        heartbeat and stops its build; the build an attempt started in the builder (an ACR run) is
        canceled here as well, since the worker that started it may be gone."""
        def cancel(run: Run) -> Run | None:
            if run.finished:
                raise RunNotCancelable(f"run {run_id} already finished ({run.status})")
            started = run.started_at if run.status == RunStatus.RUNNING else None
            return replace(run, status=RunStatus.CANCELED, finished_at=utc_now(), started_at=started,
                           reason="canceled by request")

        canceled = cancel_builder_run(self.runs, self.builder, self.life.change(run_id, None, cancel))
        self.waves.run_finished(canceled)  # what was to be built on it in its wave is not built
        return canceled

    def newest(self, *, top: int = 15, task: str | None = None, status: RunStatus | None = None,
               image: str | None = None, after: str | None = None) -> tuple[list[Run], str | None]:
        """Runs newest first (RunRepository.newest); InvalidContinuation when `after` is no run id,
        before any storage call (`da²` is no key)."""
        if after is not None:
            try:
                self.runs.ids.counter(after)
            except RunNotFound as exc:
                raise InvalidContinuation(f"continuation {after!r} is not a run id from a previous page") \
                    from exc
        # Through the lifecycle's reads: a big wave's runs not recorded yet are listed too.
        return self.life.reads.newest(top=top, task=task, status=status, image=image, after=after)
