"""The one path that creates runs (manual runs, quick builds, dispatch), and run transitions."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from shared.domain import images
from shared.domain.runs import Run, RunConflict
from shared.domain.vocabulary import RunStatus, Trigger
from shared.service_layer.ports import BuilderFactory, BuildQueue, RunRepository

log = logging.getLogger(__name__)

log = logging.getLogger(__name__)

# A queued run is stored as two rows (the run and its task copy); a transaction holds 100.
RUNS_PER_BATCH = 50
# Batches of one big fan-out recorded and sent at once: writes and sends overlap.
BATCHES_IN_FLIGHT = 4
# Runs noted as sent at once after their messages went out.
NOTES_IN_FLIGHT = 8


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


def cancel_builder_run(runs: RunRepository, builder: BuilderFactory, run: Run) -> Run:
    """Stop the build an attempt of `run` started in the builder (its ACR run), now that this call
    ended the run while no worker may be following it: failed by housekeeping or the poison handler,
    canceled by request or with its wave. A worker that still follows it stops it too (a second
    cancel is harmless); one that died would not, and that ACR run would push later.

    Best effort: logged, never raised (the run stays ended whatever the builder says). When the
    builder could not stop it, the run's reason says so, since its images may still be pushed.
    Returns the run as stored."""
    if not run.builder_run_id:
        return run
    try:
        note = builder().cancel(run)
    except Exception:  # a broken builder configuration, storage, anything: the caller goes on
        log.warning("run %s: could not cancel its build %s in the builder", run.run_id, run.builder_run_id,
                    exc_info=True)
        return run
    if note is None:
        log.info("run %s: canceled its build %s in the builder", run.run_id, run.builder_run_id)
        return run
    log.warning("run %s: %s", run.run_id, note)

    def add_note(current: Run) -> Run | None:
        if current.status != run.status or note in (current.reason or ""):
            return None
        return replace(current, reason=f"{current.reason}; {note}" if current.reason else note)

    try:
        return transition(runs, run.run_id, add_note)
    except Exception:
        log.warning("run %s: could not record that its build may still push", run.run_id, exc_info=True)
        return run


class RunLauncher:
    """Allocates run ids, names a run's output images, records runs and queues their messages."""

    def __init__(self, runs: RunRepository, queue: BuildQueue, registry_host: str | None):
        self.runs = runs
        self.queue = queue
        # The registry that image names without a registry host go to.
        self.registry_host = registry_host
        self._pool = ThreadPoolExecutor(max_workers=BATCHES_IN_FLIGHT, thread_name_prefix="launch")
        # Its own pool: a batch in `_pool` waits for these notes (one shared pool could deadlock).
        self._notes = ThreadPoolExecutor(max_workers=NOTES_IN_FLIGHT, thread_name_prefix="sent")

    def check_templates(self, templates: list[str]) -> None:
        """ValueError for a template that cannot name an image (before a run id is spent on it)."""
        for template in templates:
            images.render(template, "da0", self.registry_host)

    def allocate(self, count: int) -> list[str]:
        return self.runs.allocate(count)

    def new_run(self, run_id: str, trigger: Trigger, templates: list[str], **fields: Any) -> Run:
        """A Queued run whose outputs are the rendered templates; ValueError if one cannot render."""
        outputs = [images.render(t, run_id, self.registry_host, commit=fields.get("commit"),
                                 branch=fields.get("branch")) for t in templates]
        run = Run(run_id=run_id, status=RunStatus.QUEUED, trigger=trigger, output_images=outputs, **fields)
        run.unsent_since = run.created_at if run.released else None
        return run

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
        self.send(run_ids)

    def send(self, run_ids: list[str]) -> None:
        """The runs' queue messages, then each run noted as sent (Run.unsent_since cleared). A send
        that fails raises and leaves the runs unsent, for a redelivery or housekeeping to finish."""
        if not run_ids:
            return
        self.queue.send(run_ids)
        list(self._notes.map(self._mark_sent, run_ids))

    def _mark_sent(self, run_id: str) -> None:
        def sent(run: Run) -> Run | None:
            # A run a worker claimed already (Running) had its message: nothing to write.
            if run.status != RunStatus.QUEUED or run.unsent_since is None:
                return None
            return replace(run, unsent_since=None)

        try:
            transition(self.runs, run_id, sent)
        except Exception:  # noqa: BLE001 - the message is out; only the note is missing
            # Then the run looks unsent: a redelivery or housekeeping may send it once more, and
            # the worker's claim makes that second message a no-op.
            log.warning("run %s: sent, but could not note it", run_id, exc_info=True)

    def _record_and_send(self, batch: list[Run]) -> None:
        self.runs.create_many(batch)
        self.send([run.run_id for run in batch if run.released])
