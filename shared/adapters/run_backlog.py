"""A wave's runs planned but not recorded yet, as one JSON blob per wave in the container
`run-backlog` of the app's storage account: written once when the wave starts, read when its runs
are recorded in the background (or by a reader that must show them meanwhile), deleted once every
run of it is recorded (shared.service_layer.run_life)."""

from __future__ import annotations

import json

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import ContainerClient

from shared.adapters.storage import Storage
from shared.domain.runs import Run

CONTAINER = "run-backlog"


class BlobRunBacklog:
    def __init__(self, storage: Storage):
        self.storage = storage

    @property
    def container(self) -> ContainerClient:
        return self.storage.container(CONTAINER)

    def put(self, wave_id: str, runs: list[Run]) -> None:
        body = json.dumps([run.to_record() for run in runs])
        self.container.upload_blob(f"{wave_id}.json", body.encode(), overwrite=True)

    def get(self, wave_id: str) -> list[Run]:
        try:
            body = self.container.download_blob(f"{wave_id}.json").readall()
        except ResourceNotFoundError:
            return []
        return [Run.from_record(record) for record in json.loads(body)]

    def waves(self) -> list[str]:
        return [blob.name.removesuffix(".json") for blob in self.container.list_blobs()]

    def remove(self, wave_id: str) -> None:
        try:
            self.container.delete_blob(f"{wave_id}.json")
        except ResourceNotFoundError:
            pass
