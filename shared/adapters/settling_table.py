"""Bases settling (shared.domain.settling) in Table Storage: table `bases`, PartitionKey `settling`,
RowKey = the base's reference, escaped (image_ref.encode_key).

In the bases table, next to the quarantine: a fact about a base, and a short list (bases that moved
in the last settle window). Every write is etag-guarded (create, or replace if unchanged), so two
pushes of one base at once fold into one row, and the removal after a settled dispatch never drops
a push that came meanwhile. The poller's rows (`base|NN`, `sweep`, `registry`) are in other
partitions.
"""

from __future__ import annotations

import json

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from shared.adapters.storage import Storage
from shared.domain.image_ref import encode_key
from shared.domain.settling import SCHEMA_VERSION, Settling, SettlingConflict

PARTITION = "settling"


class TableSettling:
    def __init__(self, storage: Storage):
        self.storage = storage

    @property
    def table(self) -> TableClient:
        return self.storage.table("bases")

    def get(self, reference: str) -> Settling | None:
        try:
            entity = self.table.get_entity(PARTITION, encode_key(reference))
        except ResourceNotFoundError:
            return None
        return Settling.from_record(json.loads(entity["Data"]), entity.metadata["etag"])

    def put(self, settling: Settling) -> None:
        entity = {"PartitionKey": PARTITION, "RowKey": encode_key(settling.reference),
                  "SchemaVersion": SCHEMA_VERSION, "Data": json.dumps(settling.to_record())}
        try:
            if settling.etag is None:
                self.table.create_entity(entity)
            else:
                self.table.update_entity(entity, mode=UpdateMode.REPLACE, etag=settling.etag,
                                         match_condition=MatchConditions.IfNotModified)
        except (ResourceExistsError, ResourceNotFoundError, ResourceModifiedError) as exc:
            raise SettlingConflict(settling.reference) from exc

    def remove(self, settling: Settling) -> bool:
        try:
            self.table.delete_entity(PARTITION, encode_key(settling.reference), etag=settling.etag,
                                     match_condition=MatchConditions.IfNotModified)
        except (ResourceNotFoundError, ResourceModifiedError):
            return False
        return True

    def all(self) -> list[Settling]:
        entities = self.table.query_entities("PartitionKey eq @pk", parameters={"pk": PARTITION})
        return [Settling.from_record(json.loads(e["Data"]), e.metadata["etag"]) for e in entities]
