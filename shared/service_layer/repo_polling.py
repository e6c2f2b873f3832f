"""Polling the repositories that send no webhooks (BASETRIGGER_GIT_POLL): each cycle asks every
distinct repository and branch that a task with the commit trigger builds what its head is (one
`git ls-remote`, however many tasks share it), and a head that moved starts those tasks as a
push would (shared.service_layer.source_triggers: trigger `Commit`, the dependencies re-read at
that commit).

The first head seen of a repository and branch is recorded as the starting point and starts
nothing (the task was just created from it). A move is decided before the new head is recorded
(`githeads` table), and under an id derived from repository, branch and commit, so a restart or a
second instance in between decides the same event again and the decision log answers with the
first decision: no run is started twice. A repository that cannot be asked keeps its last head
and is asked again next cycle.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from shared.domain.decisions import Decision
from shared.domain.git_polling import GitRemoteError, is_polled, poll_event
from shared.domain.source_events import repository_key
from shared.domain.tasks import Task
from shared.service_layer.ports import GitRemote, RepositoryHeads, TaskRepository
from shared.service_layer.source_triggers import SourceTriggers

log = logging.getLogger(__name__)

# The heads row of the tasks without --branch (no branch can be named so: `~` is not allowed in refs).
DEFAULT_BRANCH_ROW = "~default"


@dataclass
class RepositoryPollReport:
    polled: int = 0  # distinct repositories and branches asked
    first_seen: int = 0
    failed: int = 0
    decisions: list[Decision] = field(default_factory=list)


class RepositoryPoller:
    def __init__(self, tasks: TaskRepository, remote: GitRemote, heads: RepositoryHeads,
                 triggers: SourceTriggers, hosts: tuple[str, ...]):
        self.tasks = tasks
        self.remote = remote
        self.heads = heads
        self.triggers = triggers
        self.hosts = hosts

    def watched(self) -> dict[tuple[str, str | None], list[Task]]:
        """The tasks to poll for, by repository and branch (None: the repository's default)."""
        groups: dict[tuple[str, str | None], list[Task]] = {}
        if not self.hosts:
            return groups
        for task in self.tasks.all():
            if task.commit_trigger_enabled and task.is_git and is_polled(task.context, self.hosts):
                groups.setdefault((repository_key(task.context), task.branch), []).append(task)
        return groups

    def cycle(self) -> RepositoryPollReport:
        report = RepositoryPollReport()
        for (repository, branch), tasks in self.watched().items():
            report.polled += 1
            token = next((t.git_token for t in tasks if t.git_token), None)
            try:
                head = self.remote.head(tasks[0].context, branch, token)
                # One row per request: the tasks that build the default branch and those naming
                # it match different events (only the former follow the default if it changes).
                row = branch or DEFAULT_BRANCH_ROW
                last = self.heads.last(repository, row)
                if last == head.commit:
                    continue
                if last is None:  # the starting point: what the tasks were created from
                    self.heads.advance(repository, row, head.commit)
                    report.first_seen += 1
                    continue
                event = poll_event(repository, head, default_branch=head.branch if branch is None else None)
                report.decisions += self.triggers.handle(event)
                self.heads.advance(repository, row, head.commit)
            except GitRemoteError as exc:
                report.failed += 1
                log.warning("polling %s (%s): %s", repository, branch or "default branch", exc)
            except Exception:  # storage, another instance deciding the same move: next cycle
                report.failed += 1
                log.warning("polling %s (%s) failed", repository, branch or "default branch", exc_info=True)
        return report
