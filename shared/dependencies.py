"""The dependency index: for each base image reference, the tasks built FROM it.

Table `dependencies`: PartitionKey = the encoded normalized base reference
(`localhost:5000/baseimages/node:9-alpine`), RowKey = task name. Finding the dependents of a push is
one partition read. Each row carries what dispatch needs to decide without reading the tasks:
- TriggerEnabled, TriggerType, Runtime   is this base a trigger for this task at all?
- BuiltDigest                            the base digest the task last built on (or saw at creation)
- TriggeredDigest                        the base digest a run was last queued for (idempotency)
- PendingRunId                           a queued, not yet started run (coalescing)
- Images                                 the task's image templates, to name the run's output
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from shared.image_ref import encode_key
from shared.storage import TRANSACTIONS_IN_FLIGHT, Storage, chunks


@dataclass
class DependencyRow:
    base: str
    task: str
    runtime: bool
    trigger_enabled: bool
    trigger_type: str
    images: list[str] = field(default_factory=list)
    built_digest: str | None = None
    triggered_digest: str | None = None
    pending_run_id: str | None = None
    etag: str | None = None

    def applies(self) -> bool:
        return self.trigger_type == "All" or self.runtime

    def to_entity(self) -> dict[str, Any]:
        return {
            "PartitionKey": encode_key(self.base),
            "RowKey": self.task,
            "Base": self.base,
            "Task": self.task,
            "Runtime": self.runtime,
            "TriggerEnabled": self.trigger_enabled,
            "TriggerType": self.trigger_type,
            "Images": json.dumps(self.images),
            "BuiltDigest": self.built_digest or "",
            "TriggeredDigest": self.triggered_digest or "",
            "PendingRunId": self.pending_run_id or "",
        }

    def dispatch_state(self) -> dict[str, Any]:
        """Only what dispatch and the worker change; merged, so the task's fields stay as they are."""
        return {
            "PartitionKey": encode_key(self.base),
            "RowKey": self.task,
            "TriggeredDigest": self.triggered_digest or "",
            "PendingRunId": self.pending_run_id or "",
        }

    @classmethod
    def from_entity(cls, entity: Any) -> DependencyRow:
        return cls(
            base=entity["Base"],
            task=entity["Task"],
            runtime=bool(entity.get("Runtime")),
            trigger_enabled=bool(entity.get("TriggerEnabled")),
            trigger_type=entity.get("TriggerType") or "Runtime",
            images=json.loads(entity.get("Images") or "[]"),
            built_digest=entity.get("BuiltDigest") or None,
            triggered_digest=entity.get("TriggeredDigest") or None,
            pending_run_id=entity.get("PendingRunId") or None,
            etag=entity.metadata.get("etag") if hasattr(entity, "metadata") else None,
        )


def _lost_race(exc: HttpResponseError) -> bool:
    """The row changed (412) or went away (404) since it was read: someone else acted on it."""
    code = getattr(exc, "error_code", None) or ""
    return exc.status_code in (404, 412) or code in ("UpdateConditionNotSatisfied", "ResourceNotFound")


class DependencyIndex:
    def __init__(self, storage: Storage):
        self.storage = storage
        # Transactions of one big fan-out overlap: the client serializes one batch while the
        # service stores another.
        self._pool = ThreadPoolExecutor(max_workers=TRANSACTIONS_IN_FLIGHT, thread_name_prefix="claim")

    @property
    def table(self) -> TableClient:
        return self.storage.table("dependencies")

    def dependents(self, base: str) -> list[DependencyRow]:
        entities = self.table.query_entities(
            "PartitionKey eq @pk", parameters={"pk": encode_key(base)}
        )
        return [DependencyRow.from_entity(e) for e in entities]

    def get(self, base: str, task: str) -> DependencyRow | None:
        try:
            return DependencyRow.from_entity(self.table.get_entity(encode_key(base), task))
        except ResourceNotFoundError:
            return None

    def put(self, row: DependencyRow) -> None:
        """Write the task-level fields; merged, so a concurrent dispatch's state is never undone."""
        entity = row.to_entity()
        del entity["TriggeredDigest"], entity["PendingRunId"]
        if not row.built_digest:
            del entity["BuiltDigest"]  # unknown now: keep what the task last built on
        self.table.upsert_entity(entity, mode=UpdateMode.MERGE)

    def remove(self, base: str, task: str) -> None:
        self.table.delete_entity(encode_key(base), task)

    def claim(self, rows: list[DependencyRow]) -> tuple[list[DependencyRow], list[DependencyRow]]:
        """Write rows only where nobody changed them since they were read (etag).

        All rows share one partition (one base), so they go in transactions of 100, several at a
        time; a transaction that loses a race is retried row by row to find out which rows lost.
        Returns (won, lost).
        """
        won: list[DependencyRow] = []
        lost: list[DependencyRow] = []
        for batch_won, batch_lost in self._pool.map(self._claim_batch, chunks(rows)):
            won.extend(batch_won)
            lost.extend(batch_lost)
        return won, lost

    def _claim_batch(self, batch: list[DependencyRow]) -> tuple[list[DependencyRow], list[DependencyRow]]:
        operations = [
            ("update", row.dispatch_state(),
             {"mode": UpdateMode.MERGE, "etag": row.etag,
              "match_condition": MatchConditions.IfNotModified})
            for row in batch
        ]
        try:
            self.table.submit_transaction(operations)
            return batch, []
        except HttpResponseError as exc:
            if not _lost_race(exc):
                raise  # storage trouble is not a lost race: let the delivery be retried
        won, lost = [], []
        for row in batch:
            (won if self.update_if_unchanged(row) else lost).append(row)
        return won, lost

    def update_if_unchanged(self, row: DependencyRow) -> bool:
        """Write the row's dispatch state unless the row changed since it was read."""
        try:
            self.table.update_entity(
                row.dispatch_state(), mode=UpdateMode.MERGE, etag=row.etag,
                match_condition=MatchConditions.IfNotModified,
            )
            return True
        except HttpResponseError as exc:
            if _lost_race(exc):
                return False
            raise
