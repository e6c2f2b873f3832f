"""The notification outbox in Table Storage: table `notifications`, PartitionKey = the run id,
RowKey = the event (`started`, `ended`, `held`), the body as sent, `State` (pending, delivered,
failed, dropped), `Attempts` and `TriedAt`. Created once per run and event (create, never upsert),
so a second attempt of a run finds it and sends nothing again. The body holds no secret: the
endpoint and its key are read from the task when it is sent."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from shared.adapters.storage import Storage
from shared.domain.notifications import Notification
from shared.domain.vocabulary import utc_now

PENDING = "pending"


def _notification(entity: Any) -> Notification:
    return Notification(notification_id=f"{entity['PartitionKey']}.{entity['RowKey']}", task=entity["Task"],
                        run_id=entity["PartitionKey"], event=entity["RowKey"], body=entity["Body"].encode())


def _keys(notification_id: str) -> tuple[str, str]:
    run_id, _, event = notification_id.rpartition(".")
    return run_id, event


class TableNotificationOutbox:
    def __init__(self, storage: Storage):
        self.storage = storage

    @property
    def table(self) -> TableClient:
        return self.storage.table("notifications")

    def add(self, notification: Notification) -> bool:
        try:
            self.table.create_entity({
                "PartitionKey": notification.run_id, "RowKey": notification.event, "Task": notification.task,
                "Body": notification.body.decode(), "State": PENDING, "Attempts": 0,
                "TriedAt": utc_now().isoformat()})
        except ResourceExistsError:
            return False
        return True

    def stale(self, tried_before: datetime) -> list[Notification]:
        query = "State eq @pending and TriedAt lt @before"
        return [_notification(e) for e in self.table.query_entities(
            query, parameters={"pending": PENDING, "before": tried_before.isoformat()})]

    def claim(self, notification_id: str, tried_before: datetime) -> bool:
        run_id, event = _keys(notification_id)
        try:
            entity = self.table.get_entity(run_id, event)
        except ResourceNotFoundError:
            return False
        if entity["State"] != PENDING or datetime.fromisoformat(entity["TriedAt"]) >= tried_before:
            return False
        try:
            tried = {"PartitionKey": run_id, "RowKey": event, "TriedAt": utc_now().isoformat()}
            self.table.update_entity(tried, mode=UpdateMode.MERGE, etag=entity.metadata["etag"],
                                     match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            return False
        return True

    def settle(self, notification_id: str, state: str, attempts: int, error: str | None = None) -> None:
        run_id, event = _keys(notification_id)
        row = {"PartitionKey": run_id, "RowKey": event, "State": state, "Attempts": attempts,
               "TriedAt": utc_now().isoformat(), "Error": error or ""}
        try:
            self.table.update_entity(row, mode=UpdateMode.MERGE)
        except ResourceNotFoundError:
            pass  # removed meanwhile: nothing to record
