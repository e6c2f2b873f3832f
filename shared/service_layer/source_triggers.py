"""Source triggers: a push or a pull request to a task's git context (its repository and branch)
starts a run of that commit (trigger `Commit` or `Pull Request`).

A push first re-reads the task's dependencies from the Dockerfile at the pushed commit, so a
commit that changes `FROM` moves the task to its new base at once (Azure/acr#374): the run builds
on it, and pushes of the new base trigger the task from then on. A pull request builds its head
commit but changes nothing of the task (it is not merged). Each (event, task) is decided once in
the decision log: a redelivered webhook starts nothing again.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from shared.domain.decisions import Decision
from shared.domain.events import Ignored
from shared.domain.source_events import SourceEvent, repository_key
from shared.domain.tasks import Task, TaskError
from shared.domain.vocabulary import Outcome, Trigger
from shared.service_layer.tasks import TaskService
from shared.service_layer.triggered import TriggeredRuns

log = logging.getLogger(__name__)


def watches(task: Task, event: SourceEvent) -> bool:
    """Is the task's context the event's repository, at the event's branch?"""
    if not task.is_git or repository_key(task.context) not in event.repositories:
        return False
    return (task.branch or event.default_branch) == event.branch


class SourceTriggers:
    def __init__(self, tasks: TaskService, triggered: TriggeredRuns):
        self.tasks = tasks
        self.triggered = triggered

    def handle(self, event: SourceEvent | Ignored) -> list[Decision]:
        if isinstance(event, Ignored):
            return [self.triggered.decide_without_run(event.event_id, event.source, Outcome.IGNORED,
                                                      event.reason)]
        matched = [t for t in self.tasks.all() if watches(t, event)]
        if not matched:
            return [self.triggered.decide_without_run(
                event.event_id, event.source, Outcome.NO_DEPENDENTS,
                f"no task builds {min(event.repositories)} at branch {event.branch}")]
        return [self._handle_task(event, task) for task in matched]

    def _handle_task(self, event: SourceEvent, task: Task) -> Decision:
        event_id = f"{event.event_id}:{task.name}"
        what = "commit" if event.trigger == Trigger.COMMIT else "pull request"
        enabled = (task.commit_trigger_enabled if event.trigger == Trigger.COMMIT
                   else task.pull_request_trigger_enabled)
        if not enabled:
            return self.triggered.decide_without_run(
                event_id, event.source, Outcome.TRIGGER_DISABLED,
                f"the {what} trigger of task {task.name} is off")
        reason = f"{what} {event.commit[:12]} on {event.branch}"
        prepare = (lambda: self.refresh_dependencies(task, event.commit)) if event.trigger == Trigger.COMMIT \
            else None
        return self.triggered.start(event_id, event.source, task, event.trigger, reason, prepare=prepare,
                                    commit=event.commit, branch=event.branch)

    def refresh_dependencies(self, task: Task, commit: str) -> None:
        """The task's bases as the Dockerfile at `commit` names them, stored and indexed now. A
        Dockerfile that cannot be read is left to the run to report (its log says why)."""
        try:
            found, _ = self.tasks.discover(task, commit=commit)
        except TaskError as exc:
            log.warning("task %s: dependencies at %s not read: %s", task.name, commit, exc)
            return
        if [d.image for d in found] == [d.image for d in task.dependencies]:
            return  # the same bases: the digests they were built on stay as recorded
        if self.tasks.record_build(replace(task, dependencies=found), found, previous=task.dependencies):
            log.info("task %s: dependencies at %s are %s", task.name, commit, [d.image for d in found])
