"""The dependency index: for each base image, the tasks built FROM it.

This is the one writer of the index. Task changes (`sync_task`, `forget_task`), builds
(`record_build`, `run_started`) and dispatch (`claim`, `coalesce`, and a big push's claims after it
answered, `write_deferred`) all come through here, each writing only the fields it owns, so that
none undoes another's concurrent write.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from shared.domain.dependencies import DeferredClaim, DependencyRow
from shared.domain.tasks import Dependency, Task
from shared.service_layer.ports import DependencyTable

# Rounds of writing deferred claims whose rows changed between the read and the write.
WRITE_ROUNDS = 5


class DependencyIndex:
    def __init__(self, table: DependencyTable):
        self.table = table

    # ---- reading ---------------------------------------------------------------------------
    def dependents(self, base: str) -> list[DependencyRow]:
        return self.table.dependents(base)

    def changed_since(self, base: str, since: datetime) -> list[DependencyRow]:
        return self.table.changed_since(base, since)

    def reread(self, rows: list[DependencyRow]) -> list[DependencyRow]:
        """The rows as stored now (rows whose task went away are left out)."""
        fresh = (self.table.get(row.base, row.task) for row in rows)
        return [row for row in fresh if row is not None]

    # ---- what tasks define -----------------------------------------------------------------
    def sync_task(self, task: Task, previous: list[Dependency]) -> None:
        """Index the task under each of its bases; drop it from bases it no longer uses."""
        for dep in task.dependencies:
            self.table.put_task_fields(_row(task, dep))
        current = {d.image for d in task.dependencies}
        for dep in previous:
            if dep.image not in current:
                self.table.remove(dep.image, task.name)

    def forget_task(self, task: Task) -> None:
        for dep in task.dependencies:
            self.table.remove(dep.image, task.name)

    # ---- what builds find ------------------------------------------------------------------
    def run_started(self, run_id: str, bases: list[str], task: str) -> None:
        """Later pushes must queue a new run instead of coalescing into this one."""
        for base in bases:
            row = self.table.get(base, task)
            if row and row.pending_run_id == run_id:
                row.pending_run_id = None
                self.table.update_if_unchanged(row)

    def record_build(self, task: Task, built_on: list[Dependency]) -> None:
        """A successful build's bases and digests become the task's index rows.

        `task` is the task as the run read it; its trigger settings apply only to bases the run found
        new (a row that exists keeps the settings a concurrent change may have written since).
        """
        known = {d.image for d in task.dependencies}
        for dep in built_on:
            if dep.image in known:
                self.table.put_build_fields(_row(task, dep))
            else:
                self.table.put_task_fields(_row(task, dep))
        current = {d.image for d in built_on}
        for image in known - current:
            self.table.remove(image, task.name)

    def untrigger(self, base: str, task: str, digest: str) -> None:
        """The task's image is no longer built on `digest` (a rollback moved it back): a later push
        of that digest must trigger it again, not be taken for the one already handled."""
        for _ in range(5):
            row = self.table.get(base, task)
            if row is None or row.triggered_digest != digest:
                return
            row.triggered_digest = None
            if self.table.update_if_unchanged(row):
                return

    # ---- what dispatch claims --------------------------------------------------------------
    def claim(self, rows: list[DependencyRow]) -> tuple[list[DependencyRow], list[DependencyRow]]:
        """Set each row's pending run and triggered digest where nobody changed it since it was read."""
        return self.table.claim(rows)

    def write_deferred(self, claims: Iterable[DeferredClaim]) -> int:
        """Write claims a big push deferred (its wave's backlog held them): each over a fresh read
        of its row, etag-guarded, and only where it still stands (DeferredClaim.stands_over): a row
        a later dispatch moved on, or written already, is left alone; one that a task update or a
        worker changed meanwhile is read again and written. Returns the claims written."""
        by_base: dict[str, dict[str, DeferredClaim]] = {}
        for claim in claims:
            by_base.setdefault(claim.base, {})[claim.task] = claim
        written = 0
        for base, todo in by_base.items():
            rows = [row for row in self.table.dependents(base) if row.task in todo]  # one read
            for _ in range(WRITE_ROUNDS):
                standing = [todo[row.task].shown_on(row) for row in rows if todo[row.task].stands_over(row)]
                won, lost = self.table.claim(standing)
                written += len(won)
                if not lost:
                    break
                rows = self.reread(lost)
        return written

    def coalesce(self, row: DependencyRow, digest: str) -> bool:
        """Mark `digest` as handled by the row's queued run; False if the row changed meanwhile."""
        row.triggered_digest = digest
        return self.table.update_if_unchanged(row)


def _row(task: Task, dep: Dependency) -> DependencyRow:
    return DependencyRow(base=dep.image, task=task.name, runtime=dep.runtime,
                         trigger_enabled=task.trigger_enabled, trigger_type=task.trigger_type,
                         images=list(task.images), built_digest=dep.digest, platform=task.platform)
