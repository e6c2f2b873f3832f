"""Runs started by a trigger other than a base image (a timer's slot, a commit, a pull request):
each is an event with an id of its own, decided once in the decision log, so a redelivered
webhook or a second instance of the timer function gets the first decision and starts nothing.
The run itself starts as a manual run does (Scheduler.start_run: a wave of its own), and like a
manual run it is refused when a base of the task points at a quarantined digest: the event is then
decided `quarantined`, and nothing starts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from shared.domain.decisions import Decision, TaskDecision
from shared.domain.quarantine import Quarantined
from shared.domain.tasks import Task
from shared.domain.vocabulary import EventSource, Outcome, Trigger
from shared.service_layer.ports import DecisionLog, DispatchClaims
from shared.service_layer.scheduling import Scheduler

log = logging.getLogger(__name__)


class TriggeredRuns:
    def __init__(self, scheduler: Scheduler, decisions: DecisionLog, claims: DispatchClaims):
        self.scheduler = scheduler
        self.decisions = decisions
        self.claims = claims

    def start(self, event_id: str, source: EventSource, task: Task, trigger: Trigger, reason: str,
              prepare: Callable[[], None] | None = None, **run_fields: Any) -> Decision:
        """The decision on `event_id`: a new run of `task`, or the decision taken before. EventBusy
        while another delivery decides the same event (the caller tries again later). `prepare`
        runs once, before the run is started (a commit's dependencies read)."""
        previous = self.claims.begin(event_id)
        if previous is not None:
            log.info("event %s already decided (%s); not started again", event_id, previous.outcome)
            return previous
        try:
            if prepare is not None:
                prepare()
            try:
                run = self.scheduler.start_run(task, trigger, str(trigger).lower() + " run", cause=reason,
                                               event_id=event_id, **run_fields)
            except Quarantined as blocked:
                # Decided like a run: a redelivery (or the next tick) gets this decision, no run.
                entry = blocked.entry
                decision = Decision(event_id, source, Outcome.QUARANTINED, entry.decision,
                                    image=entry.image, digest=entry.digest,
                                    tasks=[TaskDecision(task.name, Outcome.QUARANTINED,
                                                        f"{reason}: {entry.decision}")])
            else:
                decision = Decision(event_id, source, Outcome.QUEUED, reason, runs=[run.run_id],
                                    tasks=[TaskDecision(task.name, Outcome.QUEUED, reason, run.run_id)])
            self.decisions.record(decision)
        except Exception:
            self.claims.abandon(event_id)
            raise
        return decision

    def decide_without_run(self, event_id: str, source: EventSource, outcome: Outcome, reason: str,
                           tasks: list[TaskDecision] | None = None) -> Decision:
        """Record why an event started nothing (no task matches, trigger off, a bad Dockerfile)."""
        previous = self.decisions.seen(event_id)
        if previous is not None:
            return previous
        decision = Decision(event_id, source, outcome, reason, tasks=list(tasks or []))
        self.decisions.record(decision)
        return decision
