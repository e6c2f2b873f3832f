"""The last head seen of each polled repository and branch, in Table Storage: table `githeads`,
PartitionKey = the repository (shared.domain.source_events.repository_key, key-encoded), RowKey =
the branch (key-encoded), `Commit`. Written after the move was decided, so a restart between the
two decides the same event again, which the decision log answers with its first decision."""

from __future__ import annotations

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from shared.adapters.storage import Storage
from shared.domain.image_ref import encode_key
from shared.domain.vocabulary import utc_now


class TableRepositoryHeads:
    def __init__(self, storage: Storage):
        self.storage = storage

    @property
    def table(self) -> TableClient:
        return self.storage.table("githeads")

    def last(self, repository: str, branch: str) -> str | None:
        try:
            entity = self.table.get_entity(encode_key(repository), encode_key(branch))
        except ResourceNotFoundError:
            return None
        commit: str = entity["Commit"]
        return commit

    def advance(self, repository: str, branch: str, commit: str) -> None:
        self.table.upsert_entity({"PartitionKey": encode_key(repository), "RowKey": encode_key(branch),
                                  "Repository": repository, "Branch": branch, "Commit": commit,
                                  "SeenAt": utc_now().isoformat()}, mode=UpdateMode.REPLACE)
