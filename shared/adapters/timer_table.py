"""The last slot started for each task timer, in Table Storage: table `timers`, PartitionKey = the
task, RowKey = the timer, `LastSlot` an ISO time. Writes are etag-guarded and only move forward, so
two instances that both started the timer function never move a timer back to an older slot."""

from __future__ import annotations

from datetime import datetime

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from shared.adapters.storage import Storage

ATTEMPTS = 5


class TableTimerSlots:
    def __init__(self, storage: Storage):
        self.storage = storage

    @property
    def table(self) -> TableClient:
        return self.storage.table("timers")

    def last(self, task: str, timer: str) -> datetime | None:
        try:
            entity = self.table.get_entity(task, timer)
        except ResourceNotFoundError:
            return None
        return datetime.fromisoformat(entity["LastSlot"])

    def advance(self, task: str, timer: str, slot: datetime) -> None:
        row = {"PartitionKey": task, "RowKey": timer, "LastSlot": slot.isoformat()}
        for _ in range(ATTEMPTS):
            try:
                entity = self.table.get_entity(task, timer)
            except ResourceNotFoundError:
                try:
                    self.table.create_entity(row)
                    return
                except ResourceExistsError:
                    continue
            if datetime.fromisoformat(entity["LastSlot"]) >= slot:
                return
            try:
                self.table.update_entity(row, mode=UpdateMode.REPLACE, etag=entity.metadata["etag"],
                                         match_condition=MatchConditions.IfNotModified)
                return
            except (ResourceModifiedError, ResourceNotFoundError):
                continue
