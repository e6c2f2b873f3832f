"""The dependency index: for each base image, the tasks built FROM it.

This is the one writer of the index. Task changes (`sync_task`, `forget_task`), builds
(`record_build`, `run_started`) and dispatch (`claim`, `coalesce`) all come through here, each
writing only the fields it owns, so that none undoes another's concurrent write.
"""

from __future__ import annotations

from shared.domain.dependencies import DependencyRow
from shared.domain.tasks import Dependency, Task
from shared.service_layer.ports import DependencyTable


class DependencyIndex:
    def __init__(self, table: DependencyTable):
        self.table = table

    # ---- reading ---------------------------------------------------------------------------
    def dependents(self, base: str) -> list[DependencyRow]:
        return self.table.dependents(base)

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

    def coalesce(self, row: DependencyRow, digest: str) -> bool:
        """Mark `digest` as handled by the row's queued run; False if the row changed meanwhile."""
        row.triggered_digest = digest
        return self.table.update_if_unchanged(row)


def _row(task: Task, dep: Dependency) -> DependencyRow:
    return DependencyRow(base=dep.image, task=task.name, runtime=dep.runtime,
                         trigger_enabled=task.trigger_enabled, trigger_type=task.trigger_type,
                         images=list(task.images), built_digest=dep.digest, platform=task.platform)
