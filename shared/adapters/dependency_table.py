"""The dependency index in Table Storage.

PartitionKey = the encoded normalized base reference (`localhost:5000/baseimages/node:9-alpine`),
RowKey = task name: finding the dependents of a push is one partition read. Each write merges only
the fields its writer owns (task fields, build fields, or dispatch state).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from shared.adapters.storage import TRANSACTIONS_IN_FLIGHT, Storage, chunks
from shared.domain.dependencies import SCHEMA_VERSION, DependencyRow
from shared.domain.image_ref import encode_key
from shared.domain.vocabulary import TriggerType


def _key(row: DependencyRow) -> dict[str, Any]:
    return {"PartitionKey": encode_key(row.base), "RowKey": row.task}


def to_entity(row: DependencyRow) -> dict[str, Any]:
    return {
        **_key(row),
        "SchemaVersion": SCHEMA_VERSION,
        "Base": row.base,
        "Task": row.task,
        "Runtime": row.runtime,
        "TriggerEnabled": row.trigger_enabled,
        "TriggerType": str(row.trigger_type),
        "Images": json.dumps(row.images),
        "BuiltDigest": row.built_digest or "",
        "TriggeredDigest": row.triggered_digest or "",
        "PendingRunId": row.pending_run_id or "",
        "Platform": row.platform or "",
    }


def _dispatch_state(row: DependencyRow) -> dict[str, Any]:
    return {**_key(row), "TriggeredDigest": row.triggered_digest or "",
            "PendingRunId": row.pending_run_id or ""}


def from_entity(entity: Any) -> DependencyRow:
    return DependencyRow(
        base=entity["Base"],
        task=entity["Task"],
        runtime=bool(entity.get("Runtime")),
        trigger_enabled=bool(entity.get("TriggerEnabled")),
        trigger_type=TriggerType(entity.get("TriggerType") or TriggerType.RUNTIME),
        images=json.loads(entity.get("Images") or "[]"),
        built_digest=entity.get("BuiltDigest") or None,
        triggered_digest=entity.get("TriggeredDigest") or None,
        pending_run_id=entity.get("PendingRunId") or None,
        platform=entity.get("Platform") or None,
        etag=entity.metadata.get("etag") if hasattr(entity, "metadata") else None,
    )


def _lost_race(exc: HttpResponseError) -> bool:
    """The row changed (412) or went away (404) since it was read: someone else acted on it."""
    code = getattr(exc, "error_code", None) or ""
    return exc.status_code in (404, 412) or code in ("UpdateConditionNotSatisfied", "ResourceNotFound")


class TableDependencyTable:
    def __init__(self, storage: Storage):
        self.storage = storage
        # Transactions of one big fan-out overlap: the client serializes one batch while the
        # service stores another.
        self._pool = ThreadPoolExecutor(max_workers=TRANSACTIONS_IN_FLIGHT, thread_name_prefix="claim")

    @property
    def table(self) -> TableClient:
        return self.storage.table("dependencies")

    def dependents(self, base: str) -> list[DependencyRow]:
        entities = self.table.query_entities("PartitionKey eq @pk", parameters={"pk": encode_key(base)})
        return [from_entity(e) for e in entities]

    def changed_since(self, base: str, since: datetime) -> list[DependencyRow]:
        # Still one partition's query, but only the rows written since come back (a base with
        # 10,000 dependents: a few rows parsed, not 10,000).
        entities = self.table.query_entities("PartitionKey eq @pk and Timestamp ge @since",
                                             parameters={"pk": encode_key(base), "since": since})
        return [from_entity(e) for e in entities]

    def every_row(self) -> list[DependencyRow]:
        """Every row, with what the poller needs (one scan; the index has a row per task and base)."""
        entities = self.table.list_entities(
            select=["Base", "Task", "BuiltDigest", "TriggerEnabled", "Platform"], results_per_page=1000)
        return [DependencyRow(base=e["Base"], task=e["Task"], runtime=True,
                              trigger_enabled=bool(e.get("TriggerEnabled")), trigger_type=TriggerType.ALL,
                              built_digest=e.get("BuiltDigest") or None, platform=e.get("Platform") or None)
                for e in entities]

    def get(self, base: str, task: str) -> DependencyRow | None:
        try:
            return from_entity(self.table.get_entity(encode_key(base), task))
        except ResourceNotFoundError:
            return None

    def put_task_fields(self, row: DependencyRow) -> None:
        entity = to_entity(row)
        del entity["TriggeredDigest"], entity["PendingRunId"]
        if not row.built_digest:
            del entity["BuiltDigest"]  # unknown now: keep what the task last built on
        self.table.upsert_entity(entity, mode=UpdateMode.MERGE)

    def put_build_fields(self, row: DependencyRow) -> None:
        entity = {**_key(row), "Runtime": row.runtime}
        if row.built_digest:
            entity["BuiltDigest"] = row.built_digest
        try:
            self.table.update_entity(entity, mode=UpdateMode.MERGE)
        except ResourceNotFoundError:
            pass  # the task stopped using this base while the run built: leave it out

    def remove(self, base: str, task: str) -> None:
        self.table.delete_entity(encode_key(base), task)

    def claim(self, rows: list[DependencyRow]) -> tuple[list[DependencyRow], list[DependencyRow]]:
        """All rows share one partition (one base), so they go in transactions of 100, several at a
        time; a transaction that loses a race is retried row by row to find out which rows lost."""
        won: list[DependencyRow] = []
        lost: list[DependencyRow] = []
        for batch_won, batch_lost in self._pool.map(self._claim_batch, chunks(rows)):
            won.extend(batch_won)
            lost.extend(batch_lost)
        return won, lost

    def _claim_batch(self, batch: list[DependencyRow]) -> tuple[list[DependencyRow], list[DependencyRow]]:
        if len(batch) == 1:  # the same etag-guarded write, without a transaction's multipart body
            return (batch, []) if self.update_if_unchanged(batch[0]) else ([], batch)
        operations: list[Any] = [
            ("update", _dispatch_state(row),
             {"mode": UpdateMode.MERGE, "etag": row.etag, "match_condition": MatchConditions.IfNotModified})
            for row in batch
        ]
        try:
            self.table.submit_transaction(operations)
            return batch, []
        except HttpResponseError as exc:
            if not _lost_race(exc):
                raise  # storage trouble is not a lost race: let the delivery be retried
        won: list[DependencyRow] = []
        lost: list[DependencyRow] = []
        for row in batch:
            (won if self.update_if_unchanged(row) else lost).append(row)
        return won, lost

    def update_if_unchanged(self, row: DependencyRow) -> bool:
        try:
            self.table.update_entity(
                _dispatch_state(row), mode=UpdateMode.MERGE, etag=row.etag,
                match_condition=MatchConditions.IfNotModified,
            )
            return True
        except HttpResponseError as exc:
            if _lost_race(exc):
                return False
            raise
