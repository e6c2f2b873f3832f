"""`task why`: the recent decisions that concerned one task, newest first, with the task's own verdict.

Decisions are stored one partition, newest first, with the per-task details as JSON (a property
Table Storage cannot filter on). Rather than scanning recent decisions and parsing each one's
details, or writing an index row per task and decision on dispatch's hot path (1,000 more rows
for a 1,000-task fan-out), this asks the question the other way round: a decision concerns a task
exactly when its pushed image is one of the task's bases (dispatch reads the dependents of the
pushed image). So it reads, for each base of the task, the newest decisions about that image (a
server-side `Image eq` filter on the one key range, bounded by `top`), merges them by time and
picks the task's own detail out of each.

Limits, said where they show: decisions about a base the task no longer uses are not found; and a
big fan-out keeps only the first details that fit one property (decision_table), so a task missing
from them is looked up through its runs (a queued run records the event it was queued for).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.domain.decisions import Decision
from shared.domain.runs import Run, RunNotFound
from shared.domain.vocabulary import Outcome, RunStatus, format_time
from shared.service_layer.ports import DecisionLog, RunReader, TaskRepository

# How many of the task's newest runs are searched for the run an event queued (a fallback).
RUNS_SEARCHED = 50


@dataclass
class TaskVerdict:
    """One decision as it concerned one task."""

    time: datetime
    event_id: str
    image: str | None
    digest: str | None
    outcome: Outcome
    reason: str
    run_id: str | None = None
    run_status: RunStatus | None = None
    run_reason: str | None = None
    # What the pushed digest changed in the base (Decision.change), once known.
    change: str | None = None
    # For a run a base update queued: what the task's update policy made of it (`rebased: …`).
    update_decision: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"time": format_time(self.time), "event_id": self.event_id, "image": self.image,
                "digest": self.digest, "outcome": str(self.outcome), "reason": self.reason,
                "run_id": self.run_id, "run_status": str(self.run_status) if self.run_status else None,
                "run_reason": self.run_reason, "change": self.change,
                "update_decision": self.update_decision}


class TaskHistory:
    def __init__(self, tasks: TaskRepository, decisions: DecisionLog, runs: RunReader):
        self.tasks = tasks
        self.decisions = decisions
        self.runs = runs
        self._readers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="history")

    def why(self, name: str, top: int = 20) -> list[TaskVerdict]:
        """TaskNotFound for an unknown task; [] when no decision concerned it."""
        task = self.tasks.get(name)
        bases = list(dict.fromkeys(dep.image for dep in task.dependencies))
        found: dict[str, Decision] = {}
        for decisions in self._readers.map(lambda base: self.decisions.recent(top=top, image=base), bases):
            for decision in decisions:
                found.setdefault(decision.event_id, decision)
        newest = sorted(found.values(), key=lambda d: d.time, reverse=True)[:top]
        runs: list[Run] | None = None
        verdicts = []
        for decision in newest:
            detail = next((t for t in decision.tasks if t.task == name), None)
            if detail is not None:
                verdict = TaskVerdict(decision.time, decision.event_id, decision.image, decision.digest,
                                      detail.outcome, detail.reason, detail.run_id)
            else:
                if runs is None:
                    runs, _ = self.runs.newest(task=name, top=RUNS_SEARCHED)
                verdict = self._without_detail(decision, runs)
            verdict.change = decision.change
            verdicts.append(verdict)
        for verdict, run in zip(verdicts, self._readers.map(self._run, verdicts), strict=True):
            if run is not None:
                verdict.run_status, verdict.run_reason = run.status, run.reason
                verdict.update_decision = run.update_decision
        return verdicts

    def _run(self, verdict: TaskVerdict) -> Run | None:
        if not verdict.run_id:
            return None
        try:
            return self.runs.get(verdict.run_id)[0]
        except RunNotFound:
            return None

    @staticmethod
    def _without_detail(decision: Decision, runs: list[Run]) -> TaskVerdict:
        run = next((r for r in runs if r.event_id == decision.event_id), None)
        if run is not None:
            return TaskVerdict(decision.time, decision.event_id, decision.image, decision.digest,
                               Outcome.QUEUED, f"base {run.cause} changed", run.run_id)
        if not decision.tasks:  # e.g. no-dependents: the task did not use this base then
            return TaskVerdict(decision.time, decision.event_id, decision.image, decision.digest,
                               decision.outcome, decision.reason)
        return TaskVerdict(decision.time, decision.event_id, decision.image, decision.digest,
                           decision.outcome,
                           f"not among the {len(decision.tasks)} task outcome(s) recorded for this event "
                           "(the task did not use this base then, or a large fan-out kept only the "
                           f"first that fit): {decision.reason}")
