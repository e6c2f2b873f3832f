"""A wave's runs planned but not recorded yet, and its push's index-row claims not written yet, as
one JSON blob per wave in the container `run-backlog` of the app's storage account: written once
when the wave starts, read when they are written in the background (or by a reader that must show
them meanwhile), deleted once every run and claim of it is written (shared.service_layer.run_life).

The blob is `{"version": 2, "runs": [...], "claims": [...]}`; a blob of version 1 (written before
claims were deferred) is a JSON list of runs, read as runs without claims.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import ContainerClient

from shared.adapters.storage import Storage
from shared.domain.dependencies import DeferredClaim
from shared.domain.runs import Run

CONTAINER = "run-backlog"
VERSION = 2


class BlobRunBacklog:
    def __init__(self, storage: Storage):
        self.storage = storage

    @property
    def container(self) -> ContainerClient:
        return self.storage.container(CONTAINER)

    def put(self, wave_id: str, runs: list[Run], claims: Sequence[DeferredClaim] = ()) -> None:
        body = json.dumps({"version": VERSION, "runs": [run.to_record() for run in runs],
                           "claims": [asdict(claim) for claim in claims]})
        self.container.upload_blob(f"{wave_id}.json", body.encode(), overwrite=True)

    def get(self, wave_id: str) -> list[Run]:
        return self.read(wave_id)[0]

    def read(self, wave_id: str) -> tuple[list[Run], list[DeferredClaim]]:
        try:
            body = self.container.download_blob(f"{wave_id}.json").readall()
        except ResourceNotFoundError:
            return [], []
        return parse(json.loads(body))

    def waves(self) -> list[str]:
        return [blob.name.removesuffix(".json") for blob in self.container.list_blobs()]

    def remove(self, wave_id: str) -> None:
        try:
            self.container.delete_blob(f"{wave_id}.json")
        except ResourceNotFoundError:
            pass


def parse(record: Any) -> tuple[list[Run], list[DeferredClaim]]:
    """A backlog record of either version: its runs and its claims."""
    if isinstance(record, list):  # version 1: the runs only
        return [Run.from_record(run) for run in record], []
    return ([Run.from_record(run) for run in record.get("runs", [])],
            [DeferredClaim(**claim) for claim in record.get("claims", [])])
