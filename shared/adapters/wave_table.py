"""Waves in Table Storage, and the slots that cap running builds.

Table `waves`:
- PartitionKey `wave`, RowKey `w|<inverted counter>`: the wave itself; newest first in one range
  read. Property `State` for the "active waves" filter.
- PartitionKey = wave id, RowKey `m|<task>`: a member (its run, level, waits, readiness); a wave
  is one partition read.
- PartitionKey = wave id, RowKey `r|<level>|<run counter>`: a ready, unreleased member; the next
  runs to release are the first rows of this key range.
Table `slots`: PartitionKey = scope (`global`, or a wave id), RowKey = slot number, one entity per
taken place, created only if absent: two releases can never take the same place.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableClient, UpdateMode

from shared.adapters.storage import MAX_BATCH, TRANSACTIONS_IN_FLIGHT, Storage, chunks
from shared.domain.runs import RunIds
from shared.domain.vocabulary import WaveState, utc_now
from shared.domain.waves import SCHEMA_VERSION, Member, Wave, WaveConflict, WaveNotFound

PARTITION = "wave"
_SPAN = 10**12


class TableWaveRepository:
    def __init__(self, storage: Storage, run_ids: RunIds):
        self.storage = storage
        self.ids = RunIds("w")
        self.run_ids = run_ids
        self._pool = ThreadPoolExecutor(max_workers=TRANSACTIONS_IN_FLIGHT, thread_name_prefix="wave")

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
        return {"PartitionKey": member.wave_id, "RowKey": f"m|{member.task}", "SchemaVersion": SCHEMA_VERSION,
                "Data": json.dumps(member.to_record())}

    def _ready_key(self, member: Member) -> str:
        return f"r|{member.level:04d}|{self.run_ids.counter(member.run_id):012d}"

    def create(self, wave: Wave, members: list[Member]) -> None:
        operations: list[tuple[str, dict[str, Any]]] = []
        for member in members:
            operations.append(("upsert", self._member_entity(member)))
            if member.ready and not member.released:
                operations.append(("upsert", {"PartitionKey": wave.wave_id, "RowKey": self._ready_key(member),
                                              "Task": member.task}))
        # Transactions of one big wave overlap, as a fan-out's run writes do.
        list(self._pool.map(self.table.submit_transaction, chunks(operations, MAX_BATCH)))
        self.table.upsert_entity(self._wave_entity(wave))  # last: a listed wave has its members

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
        entities = self.table.query_entities("PartitionKey eq @pk and RowKey ge 'm|' and RowKey lt 'm}'",
                                             parameters={"pk": wave_id})
        return [Member.from_record(json.loads(e["Data"]), str(e.metadata["etag"])) for e in entities]

    def member(self, wave_id: str, task: str) -> Member | None:
        try:
            entity = self.table.get_entity(wave_id, f"m|{task}")
        except ResourceNotFoundError:
            return None
        return Member.from_record(json.loads(entity["Data"]), str(entity.metadata["etag"]))

    def add_member(self, member: Member) -> bool:
        try:
            self.table.create_entity(self._member_entity(member))
        except ResourceExistsError:
            return False
        return True

    def save_member(self, member: Member) -> bool:
        try:
            result = self.table.update_entity(self._member_entity(member), mode=UpdateMode.REPLACE,
                                              etag=member.etag, match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            return False
        member.etag = str(result["etag"])
        return True

    def mark_ready(self, member: Member) -> None:
        self.table.upsert_entity({"PartitionKey": member.wave_id, "RowKey": self._ready_key(member),
                                  "Task": member.task})

    def unmark_ready(self, member: Member) -> None:
        try:
            self.table.delete_entity(member.wave_id, self._ready_key(member))
        except ResourceNotFoundError:
            pass

    def ready(self, wave_id: str, limit: int) -> list[Member]:
        entities = self.table.query_entities("PartitionKey eq @pk and RowKey ge 'r|' and RowKey lt 'r}'",
                                             parameters={"pk": wave_id}, results_per_page=limit)
        found: list[Member] = []
        for entity in entities:
            member = self.member(wave_id, entity["Task"])
            if member is not None:
                found.append(member)
            if len(found) == limit:
                break
        return found


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

    def take(self, scope: str, cap: int, run_id: str, first: int | None = None) -> bool:
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
