"""Runs in Table Storage.

One table, one partition `run`, so every list is a key-range read and every status change is one
transaction that keeps all of a run's rows in step:
- `id|<inverted counter>`            the run itself; inverted so that ascending RowKey = newest first
- `task|<task name>|<inverted counter>`  a copy per task, for "runs of task X" without a scan
- `image|<encoded image>|<inverted counter>`  a copy per output image once the run has started:
  "runs that produced image Y", which is also how a push is recognised as a run's own output
Run ids are `<prefix><counter>`; the counter is one entity in the `counters` table updated with an
etag, so concurrent dispatchers never hand out the same id.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableClient, TableTransactionError, UpdateMode

from shared.adapters.storage import MAX_BATCH, Storage
from shared.domain.image_ref import encode_key
from shared.domain.runs import SCHEMA_VERSION, Run, RunConflict, RunIds, RunNotFound
from shared.domain.vocabulary import RunStatus

PARTITION = "run"


def _record_v1(entity: dict[str, Any]) -> dict[str, Any]:
    """Rows written before schema 2 kept each field in a property of its own."""
    names = {"run_id": "RunId", "status": "Status", "trigger": "Trigger", "task": "Task",
             "platform": "Platform", "cause": "Cause", "event_id": "EventId", "created_at": "CreatedAt",
             "started_at": "StartedAt", "finished_at": "FinishedAt", "heartbeat_at": "HeartbeatAt",
             "output_digest": "OutputDigest", "reason": "Reason", "attempt": "Attempt", "force": "Force"}
    record = {name: entity.get(prop) or None for name, prop in names.items()}
    record.update(platform=record["platform"] or "Linux", attempt=int(record["attempt"] or 0),
                  force=bool(record["force"]))
    for name, prop, empty in (("output_images", "OutputImages", "[]"),
                              ("base_digests", "BaseDigests", "{}"), ("spec", "Spec", "{}")):
        record[name] = json.loads(entity.get(prop) or empty)
    return record


def _from_entity(entity: dict[str, Any]) -> Run:
    if "Data" in entity:
        return Run.from_record(json.loads(entity["Data"]))
    return Run.from_record(_record_v1(entity))


class TableRunRepository:
    def __init__(self, storage: Storage, run_id_prefix: str):
        self.storage = storage
        self.ids = RunIds(run_id_prefix)
        # The counter entity as this process last wrote it: in the common case (no other
        # dispatcher in between) allocation is one conditional write instead of a read and a write.
        self._counter: dict[str, Any] | None = None
        self._counter_lock = threading.Lock()

    @property
    def table(self) -> TableClient:
        return self.storage.table("runs")

    @property
    def counters(self) -> TableClient:
        return self.storage.table("counters")

    # ---- ids -------------------------------------------------------------------------------
    def allocate(self, count: int) -> list[str]:
        """Reserve `count` consecutive run ids with one optimistic update of the counter."""
        if count <= 0:
            return []
        with self._counter_lock:
            known, self._counter = self._counter, None
            while True:
                if known is None:
                    try:
                        entity = self.counters.get_entity("counter", "runs")
                        known = {"Value": int(entity["Value"]), "etag": entity.metadata["etag"]}
                    except ResourceNotFoundError:
                        try:
                            result = self.counters.create_entity(
                                {"PartitionKey": "counter", "RowKey": "runs", "Value": count})
                            self._counter = {"Value": count, "etag": result["etag"]}
                            return [self.ids.format(n) for n in range(1, count + 1)]
                        except ResourceExistsError:
                            continue
                start = known["Value"]
                try:
                    result = self.counters.update_entity(
                        {"PartitionKey": "counter", "RowKey": "runs", "Value": start + count},
                        mode=UpdateMode.REPLACE, etag=known["etag"],
                        match_condition=MatchConditions.IfNotModified,
                    )
                except HttpResponseError as exc:
                    if exc.status_code == 412:
                        known = None  # someone else allocated: read again
                        continue
                    raise
                self._counter = {"Value": start + count, "etag": result["etag"]}
                return [self.ids.format(n) for n in range(start + 1, start + count + 1)]

    # ---- entities --------------------------------------------------------------------------
    def _entity(self, run: Run, row_key: str) -> dict[str, Any]:
        # The run travels as one JSON property (its record, one definition for storage and
        # code); only what list-runs filters on server-side is a property of its own.
        return {
            "PartitionKey": PARTITION,
            "RowKey": row_key,
            "SchemaVersion": SCHEMA_VERSION,
            "Status": str(run.status),
            "OutputImage": run.output_images[0] if run.output_images else "",
            "Data": json.dumps(run.to_record()),
        }

    def _rows(self, run: Run) -> list[dict[str, Any]]:
        inv = self.ids.inverted(run.run_id)
        rows = [self._entity(run, f"id|{inv}")]
        if run.task:
            rows.append(self._entity(run, f"task|{run.task}|{inv}"))
        # A run is listed under its output images once it starts: a queued run has produced
        # nothing yet, and leaving these rows out keeps a 1000-task fan-out's writes a third smaller.
        if run.status != RunStatus.QUEUED:
            for image in dict.fromkeys(run.output_images):
                rows.append(self._entity(run, f"image|{encode_key(image)}|{inv}"))
        return rows

    def create_many(self, runs: list[Run]) -> None:
        """Insert runs in transactions of up to 100 rows (all rows of a run stay in one batch)."""
        operations: list[tuple[str, dict[str, Any]]] = []
        for run in runs:
            rows = self._rows(run)
            if len(operations) + len(rows) > MAX_BATCH:
                self.table.submit_transaction(operations)
                operations = []
            operations.extend(("upsert", row) for row in rows)
        if operations:
            self.table.submit_transaction(operations)

    def get(self, run_id: str) -> tuple[Run, str]:
        try:
            entity = self.table.get_entity(PARTITION, f"id|{self.ids.inverted(run_id)}")
        except ResourceNotFoundError as exc:
            raise RunNotFound(f"run {run_id!r} not found") from exc
        return _from_entity(entity), str(entity.metadata["etag"])

    def save(self, run: Run, etag: str | None) -> str:
        """Write the run; with an etag, only if nobody changed it since it was read."""
        primary, *copies = self._rows(run)
        first: tuple[Any, ...] = (
            ("update", primary, {"mode": UpdateMode.REPLACE, "etag": etag,
                                 "match_condition": MatchConditions.IfNotModified})
            if etag else ("upsert", primary, {"mode": UpdateMode.REPLACE})
        )
        operations = [first] + [("upsert", row, {"mode": UpdateMode.REPLACE}) for row in copies]
        try:
            result = self.table.submit_transaction(operations)
        except (TableTransactionError, HttpResponseError) as exc:
            if exc.status_code == 412 or "UpdateConditionNotSatisfied" in str(exc):
                raise RunConflict(f"run {run.run_id} changed concurrently") from exc
            raise
        return str(result[0]["etag"])

    # ---- listing ---------------------------------------------------------------------------
    def newest(
        self,
        *,
        top: int = 15,
        task: str | None = None,
        status: RunStatus | None = None,
        image: str | None = None,
        after: str | None = None,
    ) -> tuple[list[Run], str | None]:
        """Newest first; one key-range read of one partition. Returns (runs, continuation)."""
        if task:
            prefix = f"task|{task}|"
        elif image:
            prefix, image = f"image|{encode_key(image)}|", None
        else:
            prefix = "id|"
        lower = prefix + (self.ids.inverted(after) if after else "")
        clauses = ["PartitionKey eq @pk", "RowKey gt @lower" if after else "RowKey ge @lower",
                   "RowKey lt @upper"]
        params: dict[str, Any] = {"pk": PARTITION, "lower": lower, "upper": prefix[:-1] + "}"}
        if status:
            clauses.append("Status eq @status")
            params["status"] = str(status)
        if image:
            clauses.append("OutputImage eq @image")
            params["image"] = image
        pages = self.table.query_entities(
            " and ".join(clauses), parameters=params, results_per_page=top
        ).by_page()
        runs: list[Run] = []
        for page in pages:
            for entity in page:
                runs.append(_from_entity(entity))
                if len(runs) == top:
                    break
            if len(runs) == top:
                break
        continuation = runs[-1].run_id if len(runs) == top else None
        return runs, continuation

    def producer_of(self, image: str) -> Run | None:
        runs, _ = self.newest(image=image, top=1)
        return runs[0] if runs else None

    def in_status(self, status: RunStatus) -> list[Run]:
        """Every run in one status: a filtered read of the partition, for housekeeping only."""
        entities = self.table.query_entities(
            "PartitionKey eq @pk and RowKey ge 'id|' and RowKey lt 'id}' and Status eq @s",
            parameters={"pk": PARTITION, "s": str(status)},
        )
        return [_from_entity(e) for e in entities]
