"""The poller's state in Table Storage: table `bases`.

- PartitionKey `base|NN` (NN = one of 64 buckets, from a hash of the base reference), RowKey = the
  encoded base reference: what the base pointed at, when it was last checked itself, when it
  changed, and the last error. The poller reads the buckets as one key range once per cycle and
  writes only the rows whose digest, platforms or error changed, in transactions of 100 per
  bucket, a few at a time. Why buckets and not one partition: writes into a partition grow slower
  with its size on Azurite (each upsert looks its row up by a scan of the partition: 10,000 rows
  took 35 s in one partition and 78 s on a rewrite, 12 s in 64 buckets), and a change that moves
  many bases at once (the first cycle, a mass retag) writes as many rows.
- PartitionKey `sweep`, RowKey = the encoded registry host: when a cycle last checked that
  registry's bases. A base without an error was answered then (shared.domain.poll_state.BaseState.swept),
  so a steady cycle writes one row per registry, not one per base.
- PartitionKey `registry`, RowKey = the encoded registry host: the back-off of a registry that
  asked to slow down or did not answer.
- PartitionKey `base` (schema 1, every base in one partition): moved into the buckets when read.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from azure.data.tables import TableClient, UpdateMode

from shared.adapters.storage import TRANSACTIONS_IN_FLIGHT, Storage, chunks
from shared.domain.image_ref import encode_key
from shared.domain.poll_state import SCHEMA_VERSION, BaseState, RegistryBackoff

log = logging.getLogger(__name__)

LEGACY_BASES = "base"  # schema 1: one partition
BUCKETS = 64
SWEEPS = "sweep"
REGISTRIES = "registry"
# A property holds at most 32K characters; an error message is a line.
_MAX_ERROR = 1000


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


def _iso(value: datetime | None) -> str:
    return value.isoformat() if value else ""


def partition_of(base: str) -> str:
    """The bucket of a base: `base|00` … `base|63`, all inside the key range `base` … `base}`."""
    return f"{LEGACY_BASES}|{int(hashlib.sha256(base.encode()).hexdigest()[:8], 16) % BUCKETS:02d}"


def _key(base: str) -> dict[str, str]:
    return {"PartitionKey": partition_of(base), "RowKey": encode_key(base)}


def _transactions(operations: Iterable[tuple[str, dict[str, Any], dict[str, Any]]]) \
        -> list[list[tuple[str, dict[str, Any], dict[str, Any]]]]:
    """Operations grouped into transactions: one partition each, at most 100."""
    by_partition: dict[str, list[tuple[str, dict[str, Any], dict[str, Any]]]] = defaultdict(list)
    for operation in operations:
        by_partition[operation[1]["PartitionKey"]].append(operation)
    return [batch for partition in sorted(by_partition) for batch in chunks(by_partition[partition])]


def to_entity(state: BaseState) -> dict[str, Any]:
    return {**_key(state.base), "SchemaVersion": SCHEMA_VERSION,
            "Base": state.base, "Digest": state.digest or "", "MediaType": state.media_type or "",
            "Platforms": json.dumps(state.platforms), "CheckedAt": _iso(state.checked_at),
            "ChangedAt": _iso(state.changed_at), "Error": (state.error or "")[:_MAX_ERROR],
            "ErrorAt": _iso(state.error_at)}


def from_entity(entity: Any) -> BaseState:
    return BaseState(base=entity["Base"], digest=entity.get("Digest") or None,
                     media_type=entity.get("MediaType") or None,
                     platforms=json.loads(entity.get("Platforms") or "{}"),
                     checked_at=_time(entity.get("CheckedAt")), changed_at=_time(entity.get("ChangedAt")),
                     error=entity.get("Error") or None, error_at=_time(entity.get("ErrorAt")))


class TableBaseRepository:
    def __init__(self, storage: Storage):
        self.storage = storage
        self._pool = ThreadPoolExecutor(max_workers=TRANSACTIONS_IN_FLIGHT, thread_name_prefix="bases")

    @property
    def table(self) -> TableClient:
        return self.storage.table("bases")

    def all(self) -> dict[str, BaseState]:
        """Every base's row as stored (its own CheckedAt: apply the sweeps for the last check)."""
        entities = self.table.query_entities(
            "PartitionKey ge @lo and PartitionKey lt @hi",
            parameters={"lo": LEGACY_BASES, "hi": LEGACY_BASES + "}"}, results_per_page=1000)
        states: dict[str, BaseState] = {}
        legacy: list[BaseState] = []
        for entity in entities:
            state = from_entity(entity)
            if entity["PartitionKey"] == LEGACY_BASES:
                legacy.append(state)
            else:
                states[state.base] = state
        if legacy:
            states.update(self._migrate(legacy, states))
        return states

    def _migrate(self, legacy: list[BaseState], bucketed: dict[str, BaseState]) -> dict[str, BaseState]:
        """Schema 1 rows into their buckets (where a bucket row exists, it is newer), then deleted."""
        moving = [s for s in legacy if s.base not in bucketed]
        try:
            self.save_many(moving)
            self._delete([{"PartitionKey": LEGACY_BASES, "RowKey": encode_key(s.base)} for s in legacy])
            log.info("bases: %d rows moved from partition %r into buckets", len(moving), LEGACY_BASES)
        except Exception:  # read as they are; the next cycle tries again
            log.warning("bases: moving %d rows into buckets failed", len(moving), exc_info=True)
        return {s.base: s for s in moving}

    def save_many(self, states: Iterable[BaseState]) -> None:
        """Upsert these states, 100 of a bucket to a transaction, a few transactions at a time."""
        batches = _transactions(("upsert", to_entity(s), {"mode": UpdateMode.REPLACE}) for s in states)
        list(self._pool.map(self.table.submit_transaction, batches))

    def remove_many(self, bases: Iterable[str]) -> None:
        self._delete([_key(b) for b in bases])

    def _delete(self, keys: list[dict[str, str]]) -> None:
        def delete(batch: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> None:
            # A row another cycle deleted already makes the whole transaction fail: go one by one.
            try:
                self.table.submit_transaction(batch)
            except Exception:
                for _, key, _ in batch:
                    try:
                        self.table.delete_entity(key["PartitionKey"], key["RowKey"])
                    except Exception:  # gone already is what we want; the next cycle tries again
                        pass

        list(self._pool.map(delete, _transactions(("delete", key, {}) for key in keys)))

    def sweeps(self) -> dict[str, datetime]:
        entities = self.table.query_entities("PartitionKey eq @pk", parameters={"pk": SWEEPS})
        return {e["Registry"]: at for e in entities if (at := _time(e.get("CheckedAt")))}

    def save_sweeps(self, sweeps: dict[str, datetime]) -> None:
        entities = [{"PartitionKey": SWEEPS, "RowKey": encode_key(registry), "Registry": registry,
                     "CheckedAt": _iso(at)} for registry, at in sorted(sweeps.items())]
        for batch in _transactions(("upsert", e, {"mode": UpdateMode.REPLACE}) for e in entities):
            self.table.submit_transaction(batch)

    def backoffs(self) -> dict[str, RegistryBackoff]:
        entities = self.table.query_entities("PartitionKey eq @pk", parameters={"pk": REGISTRIES})
        return {e["Registry"]: RegistryBackoff(e["Registry"], _time(e.get("Until")),
                                               int(e.get("Failures") or 0), e.get("Error") or None)
                for e in entities}

    def save_backoff(self, backoff: RegistryBackoff) -> None:
        key = {"PartitionKey": REGISTRIES, "RowKey": encode_key(backoff.registry)}
        if backoff.failures == 0:
            self.table.delete_entity(key["PartitionKey"], key["RowKey"])
            return
        self.table.upsert_entity({**key, "Registry": backoff.registry, "Until": _iso(backoff.until),
                                  "Failures": backoff.failures,
                                  "Error": (backoff.error or "")[:_MAX_ERROR]}, mode=UpdateMode.REPLACE)
