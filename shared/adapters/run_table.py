"""Runs in Table Storage.

Schema 3: a run's rows are spread over partitions, so the writes of a big wave spread, and every
list is one key-range read of one partition (or of two, in key order):
- PartitionKey `run|<inverted block>` (a block = 100 consecutive run ids, newer blocks first),
  RowKey `id|<inverted counter>`: the run itself, the one row a change is written to with its etag.
  Its partition comes from the run id alone (a point read by id, every transition, needs nothing
  else); the blocks are the newest-first list (a page: one range read across them in key order,
  the first block and at most the start of the next); a wave of N runs, whose ids are consecutive,
  is written to N/100 partitions.
- PartitionKey `task|NN` (NN = one of 32 buckets, from a hash of the task name), RowKey
  `task|<task>|<inverted>`: a copy per task, for "runs of task X", newest first, in one partition.
- PartitionKey `image|NN` (from a hash of the encoded image), RowKey `image|<image>|<inverted>`: a
  copy per output image once the run has started: "runs that produced image Y", which is also how
  a push is recognised as a run's own output.
The copies follow the run's row (written after it, not in one transaction: they are in other
partitions). A list answers a copy of a run that has not finished from the run's own row, so a
copy a crash left behind never shows a stale state (a finished run never changes again).
Schema 2 and before kept every row in the one partition `run`: such a run still reads (a point
read moves it into the buckets), lists merge that partition in until `basetrigger admin migrate`
(`migrate_legacy`) has moved every run.
Run ids are `<prefix><counter>`; the counter is one entity in the `counters` table updated with an
etag, so concurrent dispatchers never hand out the same id.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableClient, TableTransactionError, UpdateMode

from shared.adapters.storage import (
    MAX_BATCH,
    TRANSACTIONS_IN_FLIGHT,
    Storage,
    chunks,
    partition_is_empty,
    submit,
)
from shared.domain.image_ref import encode_key
from shared.domain.runs import SCHEMA_VERSION, Run, RunConflict, RunIds, RunNotFound
from shared.domain.vocabulary import RunStatus

LEGACY = "run"  # schema 2 and before: every row in this one partition
BUCKETS = 32
RUN_BLOCK = 100
_BLOCK_SPAN = 10**10
# Copies of unfinished runs a list reads again from their own rows at once.
REFRESHES_IN_FLIGHT = 8
# How far below the newest run a list of every run looks first (then the whole range, when that
# window holds too few). Azure reads the same first partitions either way; Azurite sorts every
# entity a query matches before it answers (LokiTableMetadataStore.queryTableEntities), so the
# open range costs it a sort of every run stored: 129 ms with 100,000 runs, not 50.
LIST_WINDOW = 3 * RUN_BLOCK


def _bucket(text: str) -> str:
    return f"{int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % BUCKETS:02d}"


@dataclass
class MigrationReport:
    """What `migrate_legacy` moved: runs, and the schema-2 rows removed with them."""

    runs: int = 0
    rows_removed: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"runs": self.runs, "rows_removed": self.rows_removed}


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
        # Two pools: a read in `_readers` may write (a schema-2 run moved when read), and a write
        # waiting on its own pool from inside it could wait for itself.
        self._writers = ThreadPoolExecutor(max_workers=TRANSACTIONS_IN_FLIGHT,
                                           thread_name_prefix="run-writes")
        self._readers = ThreadPoolExecutor(max_workers=REFRESHES_IN_FLIGHT, thread_name_prefix="run-reads")
        # Once the schema-2 partition is seen empty it stays so (nothing writes it any more): lists
        # stop reading it.
        self._legacy_gone = False
        # The newest run counter a list of every run has seen: where the next one's window starts.
        self._newest_listed: int | None = None

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

    # ---- keys ------------------------------------------------------------------------------
    def _home(self, run_id: str) -> tuple[str, str]:
        """The run's own row: (PartitionKey, RowKey)."""
        return self._block(run_id), f"id|{self.ids.inverted(run_id)}"

    def _block(self, run_id: str) -> str:
        return self._block_of(self.ids.counter(run_id))

    @staticmethod
    def _block_of(counter: int) -> str:
        return f"run|{_BLOCK_SPAN - 1 - counter // RUN_BLOCK:010d}"

    @staticmethod
    def _task_partition(task: str) -> str:
        return f"task|{_bucket(task)}"

    @staticmethod
    def _image_partition(encoded_image: str) -> str:
        return f"image|{_bucket(encoded_image)}"

    # ---- entities --------------------------------------------------------------------------
    def _entity(self, run: Run, partition: str, row_key: str) -> dict[str, Any]:
        # The run travels as one JSON property (its record, one definition for storage and
        # code); only what list-runs filters on server-side is a property of its own.
        return {
            "PartitionKey": partition,
            "RowKey": row_key,
            "SchemaVersion": SCHEMA_VERSION,
            "Status": str(run.status),
            "OutputImage": run.output_images[0] if run.output_images else "",
            "Data": json.dumps(run.to_record()),
        }

    def _rows(self, run: Run) -> list[dict[str, Any]]:
        """The run's own row first, then its copies."""
        inv = self.ids.inverted(run.run_id)
        rows = [self._entity(run, *self._home(run.run_id))]
        if run.task:
            rows.append(self._entity(run, self._task_partition(run.task), f"task|{run.task}|{inv}"))
        # A run is listed under its output images once it starts: a queued run has produced
        # nothing yet, and leaving these rows out keeps a 1000-task fan-out's writes a third smaller.
        if run.status != RunStatus.QUEUED:
            for image in dict.fromkeys(run.output_images):
                encoded = encode_key(image)
                rows.append(self._entity(run, self._image_partition(encoded), f"image|{encoded}|{inv}"))
        return rows

    def _submit(self, rows: list[dict[str, Any]]) -> None:
        """Upsert rows in transactions of one partition and at most 100 rows, a few at a time."""
        by_partition: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
        for row in rows:
            by_partition[row["PartitionKey"]].append(("upsert", row))
        batches = [batch for partition in sorted(by_partition) for batch in chunks(by_partition[partition])]
        if len(batches) == 1:
            submit(self.table, batches[0])
        else:
            list(self._writers.map(lambda batch: submit(self.table, batch), batches))

    def create_many(self, runs: list[Run]) -> None:
        """Insert runs, their own rows and copies side by side (a list that finds a copy before
        its run's row answers the copy). Idempotent: every write is an upsert."""
        self._submit([row for run in runs for row in self._rows(run)])

    def create_absent(self, runs: list[Run]) -> None:
        """Insert-or-skip: the own rows first, then the copies, each in transactions of one
        partition; a transaction that meets a row already there is redone row by row, skipping
        the rows that exist (a run changed since keeps its change)."""
        rows = [self._rows(run) for run in runs]
        self._insert_absent([own for own, *_ in rows])
        self._insert_absent([copy for _, *copies in rows for copy in copies])

    def _insert_absent(self, rows: list[dict[str, Any]]) -> None:
        by_partition: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            by_partition[row["PartitionKey"]].append(row)
        batches = [batch for partition in sorted(by_partition) for batch in chunks(by_partition[partition])]

        def insert(batch: list[dict[str, Any]]) -> None:
            try:
                self.table.submit_transaction([("create", row) for row in batch])
            except TableTransactionError:
                for row in batch:
                    try:
                        self.table.create_entity(row)
                    except ResourceExistsError:
                        continue

        list(self._writers.map(insert, batches))

    def get(self, run_id: str) -> tuple[Run, str]:
        partition, row_key = self._home(run_id)
        try:
            entity = self.table.get_entity(partition, row_key)
        except ResourceNotFoundError:
            if not self._migrate_one(row_key):
                raise RunNotFound(f"run {run_id!r} not found") from None
            entity = self.table.get_entity(partition, row_key)
        return _from_entity(entity), str(entity.metadata["etag"])

    def save(self, run: Run, etag: str | None) -> str:
        """Write the run; with an etag, only if nobody changed it since it was read. Then its
        copies (a crash in between leaves them behind; lists read unfinished runs from their own
        row, and the next change writes them again)."""
        own, *copies = self._rows(run)
        try:
            if etag:
                result = self.table.update_entity(own, mode=UpdateMode.REPLACE, etag=etag,
                                                  match_condition=MatchConditions.IfNotModified)
            else:
                result = self.table.upsert_entity(own, mode=UpdateMode.REPLACE)
        except HttpResponseError as exc:
            if exc.status_code == 412 or "UpdateConditionNotSatisfied" in str(exc):
                raise RunConflict(f"run {run.run_id} changed concurrently") from exc
            raise
        self._submit(copies)
        return str(result["etag"])

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
        """Newest first: one key-range read of one partition (the newest-first list: of the first
        blocks, in key order), merged with what schema-2 rows are left. Returns (runs, continuation)."""
        if task:
            prefix = f"task|{task}|"
            partitions = ("PartitionKey eq @pk", {"pk": self._task_partition(task)})
        elif image:
            encoded = encode_key(image)
            prefix = f"image|{encoded}|"
            partitions = ("PartitionKey eq @pk", {"pk": self._image_partition(encoded)})
        else:
            prefix = "id|"
            partitions = ("PartitionKey ge @pklo and PartitionKey lt @pkhi",
                          {"pklo": self._block(after) if after else "run|", "pkhi": "run}"})
        found = self._windowed(top, status, after) if not (task or image) else None
        if found is None:
            found = self._page(partitions, prefix, top, status, after)
        legacy = [] if self._no_legacy() else self._page(("PartitionKey eq @pk", {"pk": LEGACY}),
                                                          prefix, top, status, after)
        if legacy:  # not migrated yet: both, newest first
            found = sorted(found + legacy, key=lambda r: self.ids.counter(r.run_id), reverse=True)[:top]
        if not (task or image or after or status) and found:
            self._newest_listed = self.ids.counter(found[0].run_id)
        runs = self._fresh(found, status)
        continuation = found[-1].run_id if len(found) == top else None
        return runs, continuation

    def _windowed(self, top: int, status: RunStatus | None, after: str | None) -> list[Run] | None:
        """A page of every run read from the blocks down to LIST_WINDOW runs below where it starts
        (newer blocks all included: runs made since the last list). None when that cannot answer:
        no start known yet, a status filter (its matches may be sparse), or too few in the window."""
        start = self.ids.counter(after) if after else self._newest_listed
        if start is None or status is not None:
            return None
        bottom = max(start - top - LIST_WINDOW, 0)
        window = ("PartitionKey ge @pklo and PartitionKey le @pkhi",
                  {"pklo": self._block(after) if after else "run|", "pkhi": self._block_of(bottom)})
        found = self._page(window, "id|", top, status, after)
        if len(found) < top and bottom >= RUN_BLOCK:
            return None  # the window was short (ids handed out, runs not written): the whole range
        return found

    def _no_legacy(self) -> bool:
        if not self._legacy_gone:
            self._legacy_gone = partition_is_empty(self.table, LEGACY)
        return self._legacy_gone

    def _page(self, partitions: tuple[str, dict[str, Any]], prefix: str, top: int,
              status: RunStatus | None, after: str | None) -> list[Run]:
        where, params = partitions
        lower = prefix + (self.ids.inverted(after) if after else "")
        clauses = [where, "RowKey gt @lower" if after else "RowKey ge @lower", "RowKey lt @upper"]
        params = dict(params, lower=lower, upper=prefix[:-1] + "}")
        if status:
            clauses.append("Status eq @status")
            params["status"] = str(status)
        pages = self.table.query_entities(" and ".join(clauses), parameters=params,
                                          results_per_page=top).by_page()
        runs: list[Run] = []
        for page in pages:
            for entity in page:
                runs.append(_from_entity(entity))
                if len(runs) == top:
                    return runs
        return runs

    def _fresh(self, copies: list[Run], status: RunStatus | None) -> list[Run]:
        """The listed runs as their own rows have them: a copy of a run that has not finished may
        be behind (a change whose copies were not written yet, or never: a crash in between)."""
        unfinished = [run for run in copies if not run.finished]
        if not unfinished:
            return copies

        def own(run: Run) -> Run:
            try:
                return self.get(run.run_id)[0]
            except RunNotFound:
                return run

        current = {run.run_id: run for run in self._readers.map(own, unfinished)}
        runs = [current.get(run.run_id, run) for run in copies]
        return [run for run in runs if status is None or run.status == status]

    def producer_of(self, image: str) -> Run | None:
        runs, _ = self.newest(image=image, top=1)
        return runs[0] if runs else None

    def in_status(self, status: RunStatus) -> list[Run]:
        """Every run in one status: a filtered read of the runs' own rows (every bucket, and the
        schema-2 partition), for housekeeping only."""
        entities = self.table.query_entities(
            "PartitionKey ge @lo and PartitionKey lt @hi and RowKey ge 'id|' and RowKey lt 'id}' "
            "and Status eq @s",
            parameters={"lo": LEGACY, "hi": "run}", "s": str(status)},
        )
        return [_from_entity(e) for e in entities]

    # ---- schema 2 ----------------------------------------------------------------------------
    def _migrate_one(self, row_key: str) -> bool:
        """Move one schema-2 run (its `id|` row in the partition `run`) into the buckets, and remove
        its old rows. False when there is no such run. Safe to repeat and to race: the run's own
        row is created only if absent, so a run changed since it moved is never set back."""
        try:
            entity = self.table.get_entity(LEGACY, row_key)
        except ResourceNotFoundError:
            return False
        self._move(entity)
        return True

    def _move(self, entity: dict[str, Any]) -> int:
        """Returns the old rows removed."""
        run = _from_entity(entity)
        own, *copies = self._rows(run)
        try:
            self.table.create_entity(own)
            self._submit(copies)
        except ResourceExistsError:
            pass  # moved already (by another reader, or an earlier try that stopped short)
        inv = self.ids.inverted(run.run_id)
        old = [f"id|{inv}"] + ([f"task|{run.task}|{inv}"] if run.task else [])
        old += [f"image|{encode_key(image)}|{inv}" for image in dict.fromkeys(run.output_images)]
        # Its own old row last: while it is there, the move is not finished and is done again.
        for row_key in reversed(old):
            try:
                self.table.delete_entity(LEGACY, row_key)
            except ResourceNotFoundError:
                pass
        return len(old)

    def migrate_legacy(self) -> MigrationReport:
        """`basetrigger admin migrate`: move every schema-2 run into the buckets (idempotent; run it
        again after a failure). Returns what it moved."""
        report = MigrationReport()
        while True:
            entities = list(self.table.query_entities(
                "PartitionKey eq @pk and RowKey ge 'id|' and RowKey lt 'id}'",
                parameters={"pk": LEGACY}, results_per_page=MAX_BATCH).by_page())
            batch = next(iter(entities), None)
            rows = list(batch) if batch is not None else []
            if not rows:
                break
            for removed in self._readers.map(self._move, rows):
                report.runs += 1
                report.rows_removed += removed
        # Copies whose run was moved or is gone (schema 2 wrote them in one transaction with it).
        leftovers = list(self.table.query_entities("PartitionKey eq @pk", parameters={"pk": LEGACY},
                                                   select=["PartitionKey", "RowKey"]))
        for entity in leftovers:
            try:
                self.table.delete_entity(LEGACY, entity["RowKey"])
                report.rows_removed += 1
            except ResourceNotFoundError:
                pass
        return report
