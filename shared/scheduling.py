"""Runs asked for by people: manual task runs, quick builds, and cancellations."""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import replace

from shared import images
from shared.runs import MANUAL, QUEUED, RUNNING, TERMINAL, Run, RunStore, now
from shared.storage import Storage
from shared.tasks import TaskError, TaskService
from shared.work_queue import BuildQueue

# Uploaded contexts larger than this are refused (the API's body limit is a little above it).
MAX_CONTEXT_BYTES = 50 * 1024 * 1024


class RunNotCancelable(ValueError):
    pass


class Scheduler:
    def __init__(self, tasks: TaskService, runs: RunStore, queue: BuildQueue, storage: Storage,
                 registry: str | None):
        self.tasks = tasks
        self.runs = runs
        self.queue = queue
        self.storage = storage
        self.registry = registry

    def _start(self, run: Run) -> Run:
        self.runs.create_many([run])
        self.queue.send([run.run_id])
        return run

    def run_task(self, name: str, force: bool = False) -> Run:
        """A manual run (`az acr task run`). `force` is recorded: the builder pulls bases anew."""
        task = self.tasks.store.get(name)
        (run_id,) = self.runs.allocate(1)
        return self._start(Run(
            run_id=run_id, status=QUEUED, trigger=MANUAL, task=task.name, force=force,
            output_images=[images.render(t, run_id, self.registry) for t in task.images],
        ))

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
            for template in image_templates:  # validate before a run id is spent
                images.render(template, "da0", self.registry)
        except ValueError as exc:
            raise TaskError(str(exc)) from exc
        (run_id,) = self.runs.allocate(1)
        outputs = [images.render(t, run_id, self.registry) for t in image_templates]
        blob_name = f"{run_id}-{uuid.uuid4().hex[:8]}.tar.gz"
        self.storage.container("build-contexts").upload_blob(blob_name, archive, overwrite=True)
        return self._start(Run(
            run_id=run_id, status=QUEUED, trigger=MANUAL, task=None, output_images=outputs,
            spec={"context_blob": blob_name, "dockerfile": dockerfile,
                  "build_args": dict(build_args or {}), "platform": platform},
        ))

    def cancel(self, run_id: str) -> Run:
        def cancel(run: Run) -> Run | None:
            if run.status in TERMINAL:
                raise RunNotCancelable(f"run {run_id} already finished ({run.status})")
            started = run.started_at if run.status == RUNNING else None
            return replace(run, status="Canceled", finished_at=now(), started_at=started,
                           reason="canceled by request")

        return self.runs.transition(run_id, cancel)
