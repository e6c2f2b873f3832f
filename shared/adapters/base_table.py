"""The poller's state in Table Storage: table `bases`.

- PartitionKey `base`, RowKey = the encoded base reference: what the base pointed at when last
  checked, when, and the last error. One partition: the poller reads it whole once per cycle and
  writes it in transactions of 100.
- PartitionKey `registry`, RowKey = the encoded registry host: the back-off of a registry that
  asked to slow down or did not answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from azure.data.tables import TableClient, UpdateMode

from shared.adapters.storage import TRANSACTIONS_IN_FLIGHT, Storage, chunks
from shared.domain.bases import SCHEMA_VERSION, BaseState, RegistryBackoff
from shared.domain.image_ref import encode_key

BASES = "base"
REGISTRIES = "registry"
# A property holds at most 32K characters; an error message is a line.
_MAX_ERROR = 1000


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


def _iso(value: datetime | None) -> str:
    return value.isoformat() if value else ""


def to_entity(state: BaseState) -> dict[str, Any]:
    return {"PartitionKey": BASES, "RowKey": encode_key(state.base), "SchemaVersion": SCHEMA_VERSION,
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
        entities = self.table.query_entities("PartitionKey eq @pk", parameters={"pk": BASES},
                                             results_per_page=1000)
        states = (from_entity(e) for e in entities)
        return {s.base: s for s in states}

    def save_many(self, states: Iterable[BaseState]) -> None:
        """Upsert every state, 100 to a transaction, a few transactions at a time."""
        batches = [[("upsert", to_entity(s), {"mode": UpdateMode.REPLACE}) for s in batch]
                   for batch in chunks(list(states))]
        list(self._pool.map(self.table.submit_transaction, batches))

    def remove_many(self, bases: Iterable[str]) -> None:
        batches = [[("delete", {"PartitionKey": BASES, "RowKey": encode_key(b)}) for b in batch]
                   for batch in chunks(list(bases))]
        for batch in batches:
            # A row another cycle deleted already makes the whole transaction fail: go one by one.
            try:
                self.table.submit_transaction(batch)
            except Exception:
                for _, key in batch:
                    try:
                        self.table.delete_entity(key["PartitionKey"], key["RowKey"])
                    except Exception:  # gone already is what we want; the next cycle tries again
                        pass

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
