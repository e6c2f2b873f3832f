"""Run transitions: the etag-guarded read-change-write every run update goes through, and cancelling
the build a run left in the builder. Runs are created, released and sent by their one owner,
shared.service_layer.run_life's RunLifecycle."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

from shared.domain.runs import Run, RunConflict
from shared.service_layer.ports import BuilderFactory, RunRepository

log = logging.getLogger(__name__)


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
