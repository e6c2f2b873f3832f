"""Dispatch: from one pushed image to queued runs of the tasks built FROM it, with a decision.

The rules, in order, for each task indexed under the pushed reference:
1. its base-image trigger is off                        -> trigger-disabled
2. the base is only a build-stage base and the trigger
   type is Runtime                                      -> not-a-runtime-dependency
3. the push is the task's own output image              -> own-output (no self-trigger loop)
4. the pushed digest is the one the task last built on  -> digest-unchanged
5. a run was already queued for this exact digest       -> already-triggered (redelivery is safe)
6. a run is queued and has not started yet              -> coalesced (it will build on the new base)
7. otherwise                                            -> queued: a new run
Claims on index rows are etag-guarded, so concurrent deliveries of one push queue one run per task.
"""

from __future__ import annotations

import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from shared import decisions as d
from shared.decisions import Decision, DecisionLog, TaskDecision
from shared.dependencies import DependencyIndex, DependencyRow
from shared.events import Ignored, ImagePushed
from shared.images import is_own_output, render
from shared.runs import IMAGE_UPDATE, QUEUED, RUNS_PER_BATCH, Run, RunNotFound, RunStore
from shared.storage import TRANSACTIONS_IN_FLIGHT, chunks
from shared.work_queue import BuildQueue

log = logging.getLogger(__name__)


def classify(row: DependencyRow, digest: str, pushed: str, registry: str | None,
             pending_is_queued: bool, producer_task: str | None = None) -> tuple[str, str]:
    """The outcome for one dependent task, from its index row (rules 1-7 above).

    `producer_task` is the task whose run pushed this image, when the push is a run's output.
    """
    if not row.trigger_enabled:
        return d.TRIGGER_DISABLED, "the task's base image trigger is disabled"
    if not row.applies():
        return d.NOT_RUNTIME, "the base is used only in a build stage and the trigger type is Runtime"
    if row.task == producer_task or is_own_output(row.images, pushed, registry):
        return d.OWN_OUTPUT, "the push is this task's own output image"
    if row.built_digest == digest:
        return d.DIGEST_UNCHANGED, f"the task last built on {digest}"
    if row.triggered_digest == digest:
        return d.ALREADY_TRIGGERED, f"run {row.pending_run_id or '(started)'} was queued for this digest"
    if row.pending_run_id and pending_is_queued:
        return d.COALESCED, f"run {row.pending_run_id} is queued and will build on the new base"
    return d.QUEUED, "the base digest changed"


class Dispatcher:
    def __init__(self, index: DependencyIndex, runs: RunStore, decisions: DecisionLog,
                 queue: BuildQueue, registry: str | None):
        self.index = index
        self.runs = runs
        self.decisions = decisions
        self.queue = queue
        self.registry = registry
        self._writers = ThreadPoolExecutor(max_workers=TRANSACTIONS_IN_FLIGHT, thread_name_prefix="runs")

    def handle(self, event: ImagePushed | Ignored) -> Decision:
        if isinstance(event, Ignored):
            decision = Decision(event.event_id, event.source, d.IGNORED, event.reason)
            self.decisions.record(decision)
            return decision
        # The three reads a decision needs are independent: one round trip instead of three.
        pushed = event.reference
        seen = self._writers.submit(self.decisions.seen, event.event_id)
        rows = self._writers.submit(self.index.dependents, pushed)
        producer = self._writers.submit(self.runs.producer_of, pushed)
        previous = seen.result()
        if previous is not None:
            log.info("event %s already handled (%s); redelivery ignored", event.event_id, previous.outcome)
            return previous
        decision = self._dispatch(event, pushed, rows.result(), producer.result())
        self.decisions.record(decision)
        log.info("event %s %s: %s", event.event_id, decision.outcome, decision.reason)
        return decision

    def _record_and_send(self, batch: list[Run]) -> None:
        self.runs.create_many(batch)
        self.queue.send([run.run_id for run in batch])

    def reject(self, event_id: str, source: str, reason: str) -> Decision:
        """A payload that cannot be parsed: recorded, so the sender's mistake is visible."""
        decision = Decision(event_id, source, d.REJECTED, reason)
        self.decisions.record(decision, mark_seen=False)
        return decision

    def _pending_state(self, run_id: str | None) -> str:
        """'none', 'queued', 'started', or 'missing' (a dispatcher died between claim and record)."""
        if not run_id:
            return "none"
        try:
            run, _ = self.runs.get(run_id)
        except RunNotFound:
            return "missing"
        return "queued" if run.status == QUEUED else "started"

    def _dispatch(self, event: ImagePushed, pushed: str, rows: list[DependencyRow],
                  producer: Run | None) -> Decision:
        # Is this push a run's own output (a build pushing its result)? Then it is recorded as
        # such, and it never triggers the task that produced it (no trigger loops).
        if producer and producer.output_digest not in (None, event.digest):
            producer = None  # someone pushed the tag again after that run
        if not rows:
            if producer:
                return Decision(event.event_id, event.source, d.OWN_OUTPUT,
                                f"the output of run {producer.run_id}; no task is built FROM {pushed}",
                                image=pushed, digest=event.digest, runs=[producer.run_id])
            return Decision(event.event_id, event.source, d.NO_DEPENDENTS,
                            f"no task is built FROM {pushed}", image=pushed, digest=event.digest)
        producer_task = producer.task if producer else None

        details: list[TaskDecision] = []
        runs: list[Run] = []
        requeue: list[str] = []
        todo = rows
        for _attempt in range(3):  # rows that lost a race are re-read and decided again
            fresh: list[DependencyRow] = []
            for row in todo:
                pending = self._pending_state(row.pending_run_id)
                outcome, reason = classify(row, event.digest, pushed, self.registry,
                                           pending == "queued", producer_task)
                if outcome == d.QUEUED:
                    fresh.append(row)
                    continue
                if outcome == d.ALREADY_TRIGGERED and pending == "queued":
                    # The run may have lost its message (a crash between recording and sending):
                    # send again; the worker's Queued->Running guard makes a second copy harmless.
                    requeue.append(row.pending_run_id)
                if outcome == d.ALREADY_TRIGGERED and pending == "missing":
                    # Claimed, but the run was never recorded: record it now, under its id.
                    runs.append(self._new_run(event, pushed, row, row.pending_run_id))
                    reason = f"run {row.pending_run_id} was claimed but never recorded; recorded now"
                if outcome == d.COALESCED:
                    row.triggered_digest = event.digest
                    if not self.index.update_if_unchanged(row):
                        fresh.append(row)  # changed under us: decide again below
                        continue
                details.append(TaskDecision(row.task, outcome, reason, row.pending_run_id))
            todo = self._queue_runs(event, pushed, fresh, runs, details)
            if not todo:
                break
            todo = [r for r in (self.index.get(pushed, row.task) for row in todo) if r is not None]
        for row in todo:
            details.append(TaskDecision(row.task, d.ALREADY_TRIGGERED, "concurrent dispatch kept winning"))

        # Each batch of runs is recorded before its messages go out (a worker must find its run);
        # several batches are in flight at once, so writes and sends of a big fan-out overlap.
        sending = self.queue.send_async(requeue)
        list(self._writers.map(self._record_and_send, chunks(runs, RUNS_PER_BATCH)))
        for future in sending:
            future.result()
        counts = Counter(t.outcome for t in details)
        outcome = d.QUEUED if runs else (details[0].outcome if len(counts) == 1 else "not-queued")
        summary = ", ".join(f"{n} {name}" for name, n in sorted(counts.items()))
        return Decision(event.event_id, event.source, outcome,
                        f"{len(details)} dependent task(s) of {pushed}: {summary}",
                        image=pushed, digest=event.digest,
                        runs=[run.run_id for run in runs], tasks=details)

    def _new_run(self, event: ImagePushed, pushed: str, row: DependencyRow, run_id: str) -> Run:
        return Run(
            run_id=run_id, status=QUEUED, trigger=IMAGE_UPDATE, task=row.task,
            cause=f"{pushed}@{event.digest}", event_id=event.event_id,
            output_images=[render(t, run_id, self.registry) for t in row.images],
        )

    def _queue_runs(self, event: ImagePushed, pushed: str, rows: list[DependencyRow],
                    runs: list[Run], details: list[TaskDecision]) -> list[DependencyRow]:
        """Allocate ids, build the Run records, claim the rows. Returns the rows that lost a race."""
        if not rows:
            return []
        planned: dict[str, Run] = {}
        for row, run_id in zip(rows, self.runs.allocate(len(rows)), strict=True):
            try:
                planned[row.task] = self._new_run(event, pushed, row, run_id)
            except ValueError as exc:  # an image template that no longer renders: skip only this task
                details.append(TaskDecision(row.task, d.REJECTED, f"the task's image is invalid: {exc}"))
                continue
            row.pending_run_id = run_id
            row.triggered_digest = event.digest
        won, lost = self.index.claim([row for row in rows if row.task in planned])
        for row in won:
            run = planned[row.task]
            runs.append(run)
            details.append(TaskDecision(row.task, d.QUEUED, f"base {run.cause} changed", run.run_id))
        return lost
