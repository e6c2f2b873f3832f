"""The one path that creates runs (manual runs, quick builds, dispatch), and run transitions."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from shared.domain import images
from shared.domain.runs import Run, RunConflict
from shared.domain.vocabulary import RunStatus, Trigger
from shared.service_layer.ports import BuildQueue, RunRepository

# A queued run is stored as two rows (the run and its task copy); a transaction holds 100.
RUNS_PER_BATCH = 50
# Batches of one big fan-out recorded and sent at once: writes and sends overlap.
BATCHES_IN_FLIGHT = 4


def transition(runs: RunRepository, run_id: str, change: Callable[[Run], Run | None],
               *, retries: int = 5) -> Run:
    """Read, apply `change(run) -> Run | None`, write with the etag; retry on conflicts.

    `change` returns None to leave the run as it is (the transition no longer applies); the run as
    stored is returned either way.
    """
    for _ in range(retries):
        run, etag = runs.get(run_id)
        updated = change(replace(run))
        if updated is None:
            return run
        try:
            runs.save(updated, etag)
            return updated
        except RunConflict:
            continue
    raise RunConflict(f"run {run_id} kept changing; gave up after {retries} attempts")


class RunLauncher:
    """Allocates run ids, names a run's output images, records runs and queues their messages."""

    def __init__(self, runs: RunRepository, queue: BuildQueue, registry: str | None):
        self.runs = runs
        self.queue = queue
        # The registry that image names without a registry host go to.
        self.registry = registry
        self._pool = ThreadPoolExecutor(max_workers=BATCHES_IN_FLIGHT, thread_name_prefix="launch")

    def check_templates(self, templates: list[str]) -> None:
        """ValueError for a template that cannot name an image (before a run id is spent on it)."""
        for template in templates:
            images.render(template, "da0", self.registry)

    def allocate(self, count: int) -> list[str]:
        return self.runs.allocate(count)

    def new_run(self, run_id: str, trigger: Trigger, templates: list[str], **fields: Any) -> Run:
        """A Queued run whose outputs are the rendered templates; ValueError if one cannot render."""
        outputs = [images.render(t, run_id, self.registry, commit=fields.get("commit"),
                                 branch=fields.get("branch")) for t in templates]
        return Run(run_id=run_id, status=RunStatus.QUEUED, trigger=trigger, output_images=outputs, **fields)

    def launch(self, runs: list[Run]) -> None:
        """Record the runs, then queue a message for each released one (a worker must find its run
        recorded; a wave's runs wait for their release)."""
        batches = [runs[i : i + RUNS_PER_BATCH] for i in range(0, len(runs), RUNS_PER_BATCH)]
        list(self._pool.map(self._record_and_send, batches))

    def record(self, runs: list[Run]) -> None:
        """Record runs without sending anything (a wave's runs are released afterwards)."""
        batches = [runs[i : i + RUNS_PER_BATCH] for i in range(0, len(runs), RUNS_PER_BATCH)]
        list(self._pool.map(self.runs.create_many, batches))

    def requeue(self, run_ids: list[str]) -> None:
        """Send messages again for recorded runs that may have lost theirs."""
        if run_ids:
            self.queue.send(run_ids)

    def _record_and_send(self, batch: list[Run]) -> None:
        self.runs.create_many(batch)
        self.queue.send([run.run_id for run in batch if run.released])
