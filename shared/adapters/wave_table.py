"""Waves in Table Storage, and the slots that cap running builds.

Table `waves`, schema 2:
- PartitionKey `wave`, RowKey `w|<inverted counter>`: the wave itself; newest first in one range
  read. Property `State` for the "active waves" filter.
- PartitionKey `<wave id>|NN` (NN = one of 8 buckets, from a hash of the task name), so that the
  writes of a big wave spread (a partition takes about 2,000 entities/s in Azure):
  - RowKey `m|<task>`: a member (its run, level, waits, readiness); a point read by wave and task,
    and the wave's members are one key-range read over its buckets;
  - RowKey `r|<level>|<run counter>`: a ready, unreleased member, in its member's bucket; the next
    runs to release are the first rows of this key range, merged over the buckets (one read each,
    side by side).
Schema 1 kept a wave's members and ready rows in one partition, the wave id: such a wave's rows are
moved into its buckets the first time this process touches the wave (`_spread`), or by `basetrigger
admin migrate` (`migrate_legacy`).
Table `slots`: PartitionKey = scope (`global`, or a wave id), RowKey = slot number, one entity per
taken place, created only if absent: two releases can never take the same place.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableClient, TableTransactionError, UpdateMode

from shared.adapters.storage import MAX_BATCH, TRANSACTIONS_IN_FLIGHT, Storage, chunks, submit
from shared.domain.runs import RunIds
from shared.domain.vocabulary import WaveState, utc_now
from shared.domain.waves import SCHEMA_VERSION, Member, Wave, WaveConflict, WaveNotFound

log = logging.getLogger(__name__)

PARTITION = "wave"
MEMBER_BUCKETS = 8
_SPAN = 10**12


def member_partition(wave_id: str, task: str) -> str:
    """A member's bucket: `<wave>|0` … `<wave>|7`, all inside the key range `<wave>|` … `<wave>}`."""
    return f"{wave_id}|{int(hashlib.sha256(task.encode()).hexdigest()[:8], 16) % MEMBER_BUCKETS}"


def _buckets(wave_id: str) -> tuple[str, str]:
    """The key range of a wave's member partitions."""
    return f"{wave_id}|", f"{wave_id}}}"


@dataclass
class MigrationReport:
    """What `migrate_legacy` moved: waves whose members were in one partition, and their rows."""

    waves: int = 0
    members: int = 0
    ready_rows: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"waves": self.waves, "members": self.members, "ready_rows": self.ready_rows}


class TableWaveRepository:
    def __init__(self, storage: Storage, run_ids: RunIds):
        self.storage = storage
        self.ids = RunIds("w")
        self.run_ids = run_ids
        self._pool = ThreadPoolExecutor(max_workers=TRANSACTIONS_IN_FLIGHT, thread_name_prefix="wave")
        self._bucket_readers = ThreadPoolExecutor(max_workers=MEMBER_BUCKETS, thread_name_prefix="wave-reads")
        # Waves whose schema-1 partition is known empty (created here, or moved): nothing writes
        # that partition any more, so it is looked at once per wave and process.
        self._spread_waves: set[str] = set()
        self._spread_lock = threading.Lock()

    @property
    def table(self) -> TableClient:
        return self.storage.table("waves")

    def _key(self, wave_id: str) -> str:
        return f"w|{self.ids.inverted(wave_id)}"

    # ---- waves -----------------------------------------------------------------------------
    def _wave_entity(self, wave: Wave) -> dict[str, Any]:
        return {"PartitionKey": PARTITION, "RowKey": self._key(wave.wave_id), "SchemaVersion": SCHEMA_VERSION,
                "State": str(wave.state), "Data": json.dumps(wave.to_record())}

    def _member_entity(self, member: Member) -> dict[str, Any]:
        return {"PartitionKey": member_partition(member.wave_id, member.task), "RowKey": f"m|{member.task}",
                "SchemaVersion": SCHEMA_VERSION, "Data": json.dumps(member.to_record())}

    def _ready_entity(self, member: Member) -> dict[str, Any]:
        return {"PartitionKey": member_partition(member.wave_id, member.task),
                "RowKey": self._ready_key(member), "Task": member.task}

    def _ready_key(self, member: Member) -> str:
        return f"r|{member.level:04d}|{self.run_ids.counter(member.run_id):012d}"

    def create(self, wave: Wave, members: list[Member]) -> None:
        with self._spread_lock:
            self._spread_waves.add(wave.wave_id)  # a new wave has no schema-1 rows
        by_partition: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
        for member in members:
            entity = self._member_entity(member)
            by_partition[entity["PartitionKey"]].append(("upsert", entity))
            if member.ready and not member.released:
                by_partition[entity["PartitionKey"]].append(("upsert", self._ready_entity(member)))
        # Transactions of one big wave overlap, as a fan-out's run writes do.
        batches = [batch for partition in sorted(by_partition) for batch in chunks(by_partition[partition])]
        list(self._pool.map(lambda batch: submit(self.table, batch), batches))
        self.table.upsert_entity(self._wave_entity(wave))  # last: a listed wave has its members

    def create_absent(self, members: list[Member]) -> None:
        """A big wave's members from its backlog: each member created only if absent (a member
        changed since, by a release or an end that recorded the backlog first, keeps its change),
        with the ready mark of a ready, unreleased one, in transactions of one bucket; a
        transaction that meets a member already there is redone row by row, and that member's
        ready mark follows it as stored (a stray mark would only cost a release a no-op)."""
        by_partition: dict[str, list[Member]] = defaultdict(list)
        for member in members:
            by_partition[member_partition(member.wave_id, member.task)].append(member)
        with self._spread_lock:  # a wave with a backlog is of this schema: no schema-1 rows
            self._spread_waves.update(member.wave_id for member in members)
        # Half a transaction's size: a member and its ready mark go together.
        batches = [batch for partition in sorted(by_partition)
                   for batch in chunks(by_partition[partition], MAX_BATCH // 2)]

        def operations(member: Member) -> list[tuple[str, dict[str, Any]]]:
            ready = member.ready and not member.released and member.outcome is None
            return [("create", self._member_entity(member))] + \
                ([("upsert", self._ready_entity(member))] if ready else [])

        def insert(batch: list[Member]) -> None:
            try:
                self.table.submit_transaction([op for member in batch for op in operations(member)])
                return
            except TableTransactionError:
                pass
            for member in batch:
                if not self.add_member(member):
                    stored = self.member(member.wave_id, member.task)
                    if stored is None or not stored.ready or stored.released or stored.outcome:
                        continue
                    member = stored
                elif not (member.ready and not member.released and member.outcome is None):
                    continue
                self.mark_ready(member)

        list(self._pool.map(insert, batches))

    def get(self, wave_id: str) -> tuple[Wave, str]:
        try:
            entity = self.table.get_entity(PARTITION, self._key(wave_id))
        except (ResourceNotFoundError, LookupError) as exc:
            raise WaveNotFound(f"wave {wave_id!r} not found") from exc
        return Wave.from_record(json.loads(entity["Data"])), str(entity.metadata["etag"])

    def save(self, wave: Wave, etag: str) -> str:
        try:
            result = self.table.update_entity(self._wave_entity(wave), mode=UpdateMode.REPLACE, etag=etag,
                                              match_condition=MatchConditions.IfNotModified)
        except ResourceModifiedError as exc:
            raise WaveConflict(f"wave {wave.wave_id} changed concurrently") from exc
        return str(result["etag"])

    def newest(self, top: int = 15, after: str | None = None) -> tuple[list[Wave], str | None]:
        lower = self._key(after) if after else "w|"
        query = "PartitionKey eq @pk and RowKey " + ("gt" if after else "ge") + " @lower and RowKey lt 'w}'"
        waves: list[Wave] = []
        for entity in self.table.query_entities(query, parameters={"pk": PARTITION, "lower": lower},
                                                results_per_page=top):
            waves.append(Wave.from_record(json.loads(entity["Data"])))
            if len(waves) == top:
                break
        return waves, waves[-1].wave_id if len(waves) == top else None

    def active(self) -> list[Wave]:
        entities = self.table.query_entities(
            "PartitionKey eq @pk and RowKey ge 'w|' and RowKey lt 'w}' and State eq @state",
            parameters={"pk": PARTITION, "state": str(WaveState.ACTIVE)})
        return [Wave.from_record(json.loads(e["Data"])) for e in entities]

    # ---- members ---------------------------------------------------------------------------
    def members(self, wave_id: str) -> list[Member]:
        """Every member: one key-range read over the wave's buckets."""
        self._spread(wave_id)
        low, high = _buckets(wave_id)
        entities = self.table.query_entities(
            "PartitionKey ge @lo and PartitionKey lt @hi and RowKey ge 'm|' and RowKey lt 'm}'",
            parameters={"lo": low, "hi": high})
        return [Member.from_record(json.loads(e["Data"]), str(e.metadata["etag"])) for e in entities]

    def member(self, wave_id: str, task: str) -> Member | None:
        self._spread(wave_id)
        return self._member_at(member_partition(wave_id, task), task)

    def _member_at(self, partition: str, task: str) -> Member | None:
        try:
            entity = self.table.get_entity(partition, f"m|{task}")
        except ResourceNotFoundError:
            return None
        return Member.from_record(json.loads(entity["Data"]), str(entity.metadata["etag"]))

    def add_member(self, member: Member) -> bool:
        self._spread(member.wave_id)
        try:
            self.table.create_entity(self._member_entity(member))
        except ResourceExistsError:
            return False
        return True

    def save_member(self, member: Member) -> bool:
        self._spread(member.wave_id)
        try:
            result = self.table.update_entity(self._member_entity(member), mode=UpdateMode.REPLACE,
                                              etag=member.etag, match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            return False
        member.etag = str(result["etag"])
        return True

    def mark_ready(self, member: Member) -> None:
        self._spread(member.wave_id)
        self.table.upsert_entity(self._ready_entity(member))

    def unmark_ready(self, member: Member) -> None:
        self._spread(member.wave_id)
        try:
            self.table.delete_entity(member_partition(member.wave_id, member.task), self._ready_key(member))
        except ResourceNotFoundError:
            pass

    def ready(self, wave_id: str, limit: int) -> list[Member]:
        """The first `limit` ready members in key order (lowest level, then oldest run): the first
        rows of each bucket, read side by side, merged."""
        self._spread(wave_id)

        def first_rows(partition: str) -> list[tuple[str, str, str]]:
            entities = self.table.query_entities(
                "PartitionKey eq @pk and RowKey ge 'r|' and RowKey lt 'r}'", parameters={"pk": partition},
                select=["PartitionKey", "RowKey", "Task"], results_per_page=limit)
            rows = []
            for entity in entities:
                rows.append((str(entity["RowKey"]), partition, str(entity["Task"])))
                if len(rows) == limit:
                    break
            return rows

        partitions = [f"{wave_id}|{n}" for n in range(MEMBER_BUCKETS)]
        candidates = list(heapq.merge(*self._bucket_readers.map(first_rows, partitions)))
        found: list[Member] = []
        # The members themselves, `limit` point reads side by side (more only where a ready row
        # outlived its member).
        while candidates and len(found) < limit:
            chunk, candidates = candidates[:limit - len(found)], candidates[limit - len(found):]
            read = self._bucket_readers.map(lambda row: self._member_at(row[1], row[2]), chunk)
            found += [member for member in read if member is not None]
        return found

    # ---- schema 1 ----------------------------------------------------------------------------
    def _spread(self, wave_id: str) -> MigrationReport:
        """Move a schema-1 wave's members and ready rows (all in the partition `<wave id>`) into
        its buckets, once per wave and process. Safe to repeat and to race: a member is created in
        its bucket only if absent, so a member changed since it moved is never set back, and the
        old rows go only after every new one is written (an interrupted move is done again)."""
        report = MigrationReport()
        if wave_id in self._spread_waves:
            return report
        rows = list(self.table.query_entities("PartitionKey eq @pk", parameters={"pk": wave_id}))
        if rows:
            members = [e for e in rows if str(e["RowKey"]).startswith("m|")]
            ready = [e for e in rows if str(e["RowKey"]).startswith("r|")]
            moved: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
            for operation, entity, task in [("create", e, str(e["RowKey"])[2:]) for e in members] + \
                    [("upsert", e, str(e["Task"])) for e in ready]:
                partition = member_partition(wave_id, task)
                moved[partition].append((operation, dict(entity, PartitionKey=partition)))
            for partition in sorted(moved):
                for batch in chunks(moved[partition]):
                    self._write_if_absent(batch)
            for batch in chunks([("delete", {"PartitionKey": wave_id, "RowKey": e["RowKey"]}) for e in rows]):
                self._delete(batch)
            report = MigrationReport(waves=1, members=len(members), ready_rows=len(ready))
            log.info("wave %s: %d member(s) and %d ready row(s) moved into %d buckets",
                     wave_id, len(members), len(ready), MEMBER_BUCKETS)
        with self._spread_lock:
            self._spread_waves.add(wave_id)
        return report

    def _write_if_absent(self, batch: list[tuple[str, dict[str, Any]]]) -> None:
        """A transaction of creates (and upserts); where one row exists already (moved before),
        the rows one by one, keeping those that exist."""
        try:
            self.table.submit_transaction(batch)
        except TableTransactionError:
            for operation, entity in batch:
                try:
                    if operation == "create":
                        self.table.create_entity(entity)
                    else:
                        self.table.upsert_entity(entity)
                except ResourceExistsError:
                    pass

    def _delete(self, batch: list[tuple[str, dict[str, Any]]]) -> None:
        try:
            self.table.submit_transaction(batch)
        except TableTransactionError:  # one gone already (another mover): one by one
            for _, key in batch:
                self.table.delete_entity(key["PartitionKey"], key["RowKey"])  # a 404 is no error here

    def migrate_legacy(self) -> MigrationReport:
        """`basetrigger admin migrate`: move every schema-1 wave's members into its buckets
        (idempotent; run it again after a failure). Returns what it moved."""
        report = MigrationReport()
        waves = self.table.query_entities("PartitionKey eq @pk and RowKey ge 'w|' and RowKey lt 'w}'",
                                          parameters={"pk": PARTITION}, select=["Data"])
        for entity in waves:
            wave_id = str(json.loads(entity["Data"])["wave_id"])
            with self._spread_lock:
                self._spread_waves.discard(wave_id)  # look again: another process may have written it
            moved = self._spread(wave_id)
            report.waves += moved.waves
            report.members += moved.members
            report.ready_rows += moved.ready_rows
        return report


class TableSlots:
    def __init__(self, storage: Storage):
        self.storage = storage

    @property
    def table(self) -> TableClient:
        return self.storage.table("slots")

    def holders(self, scope: str) -> list[str]:
        return list(self.taken_at(scope))

    def taken_at(self, scope: str) -> dict[str, datetime]:
        entities = self.table.query_entities("PartitionKey eq @pk", parameters={"pk": scope})
        # The store's own time of the write (every entity has one).
        return {str(e["RunId"]): e.metadata["timestamp"] or utc_now() for e in entities}

    def take(self, scope: str, cap: int, run_id: str, first: int | None = None, sole: bool = False) -> bool:
        if first is not None and first < cap:
            try:
                self.table.create_entity({"PartitionKey": scope, "RowKey": str(first), "RunId": run_id})
                return True
            except ResourceExistsError:
                pass  # not free after all: look at the scope
        taken = {str(e["RowKey"]): str(e["RunId"])
                 for e in self.table.query_entities("PartitionKey eq @pk", parameters={"pk": scope})}
        if run_id in taken.values():
            return True
        for slot in range(cap):
            if str(slot) in taken:
                continue
            try:
                self.table.create_entity({"PartitionKey": scope, "RowKey": str(slot), "RunId": run_id})
            except ResourceExistsError:
                continue  # someone took it between our read and our write: try the next
            if not sole:  # a take for this run may be going on beside ours
                self._keep_one(scope, run_id)
            return True
        # Every place went to others between our read and our writes; a take for this same run
        # may be among them (then the run holds its place).
        return run_id in self.holders(scope)

    def _keep_one(self, scope: str, run_id: str) -> None:
        """Two takes for one run at once (two releasers of a member) can each create a place: the
        run keeps its lowest one, whichever take gets here, so it never holds two."""
        places = sorted((int(e["RowKey"]), e) for e in self.table.query_entities(
            "PartitionKey eq @pk and RunId eq @run", parameters={"pk": scope, "run": run_id}))
        for _, extra in places[1:]:
            try:
                self.table.delete_entity(scope, extra["RowKey"], etag=extra.metadata["etag"],
                                         match_condition=MatchConditions.IfNotModified)
            except (ResourceNotFoundError, ResourceModifiedError):
                pass

    def give_back(self, scope: str, run_id: str) -> None:
        for entity in self.table.query_entities("PartitionKey eq @pk and RunId eq @run",
                                                parameters={"pk": scope, "run": run_id}):
            try:
                self.table.delete_entity(scope, entity["RowKey"], etag=entity.metadata["etag"],
                                         match_condition=MatchConditions.IfNotModified)
            except (ResourceNotFoundError, ResourceModifiedError):
                pass
