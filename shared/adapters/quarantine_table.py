"""Quarantined digests in Table Storage: table `bases`, PartitionKey `quarantine`, RowKey = the digest.

In the bases table, not one of its own, because a quarantine is a fact about a base and the list is
short (a handful of bad digests): dispatch reads the whole partition once per event, one request.
The poller's rows are `base|NN`, `sweep` and `registry`: its range reads never include this key.
"""

from __future__ import annotations

import json

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient

from shared.adapters.storage import Storage
from shared.domain.quarantine import QuarantineEntry

PARTITION = "quarantine"
SCHEMA_VERSION = 1


class TableQuarantine:
    def __init__(self, storage: Storage):
        self.storage = storage

    @property
    def table(self) -> TableClient:
        return self.storage.table("bases")

    def put(self, entry: QuarantineEntry) -> None:
        self.table.upsert_entity({"PartitionKey": PARTITION, "RowKey": entry.digest,
                                  "SchemaVersion": SCHEMA_VERSION, "Data": json.dumps(entry.to_record())})

    def remove(self, digest: str) -> QuarantineEntry | None:
        """The entry removed, None when there was none."""
        try:
            entity = self.table.get_entity(PARTITION, digest)
        except ResourceNotFoundError:
            return None
        try:
            self.table.delete_entity(PARTITION, digest)
        except ResourceNotFoundError:
            return None  # released by someone else at the same time
        return QuarantineEntry.from_record(json.loads(entity["Data"]))

    def all(self) -> list[QuarantineEntry]:
        entities = self.table.query_entities("PartitionKey eq @pk", parameters={"pk": PARTITION})
        return [QuarantineEntry.from_record(json.loads(e["Data"])) for e in entities]
