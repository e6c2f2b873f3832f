"""A wave's runs and members planned but not recorded yet, and its push's index-row claims not
written yet, as one JSON blob per wave in the container `run-backlog` of the app's storage account:
written once when the wave starts (before its row), read when they are written in the background
(or by a reader that must show them meanwhile), deleted once all of it is written
(shared.service_layer.run_life).

The blob is `{"version": 2, "runs": [...], "members": [...], "claims": [...]}`; a blob of version 1
(a JSON list of runs: that wave's members and claims were written before its push answered) still
reads."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import ContainerClient

from shared.adapters.storage import Storage
from shared.domain.dependencies import DeferredClaim
from shared.domain.runs import Run
from shared.domain.waves import Member
from shared.service_layer.ports import BacklogRecord

CONTAINER = "run-backlog"
VERSION = 2


def to_json(runs: list[Run], members: Sequence[Member] = (), claims: Sequence[DeferredClaim] = ()) -> str:
    return json.dumps({"version": VERSION, "runs": [run.to_record() for run in runs],
                       "members": [member.to_record() for member in members],
                       # A claim's fields are plain values: no deep walk (asdict) over 10,000 of them.
                       "claims": [dict(vars(claim)) for claim in claims]})


def from_json(body: bytes | str) -> BacklogRecord:
    data: Any = json.loads(body)
    if isinstance(data, list):  # version 1: the runs alone
        return BacklogRecord(runs=[Run.from_record(record) for record in data])
    return BacklogRecord(runs=[Run.from_record(record) for record in data.get("runs", [])],
                         members=[Member.from_record(record) for record in data.get("members", [])],
                         claims=[DeferredClaim(**claim) for claim in data.get("claims", [])])


class BlobRunBacklog:
    def __init__(self, storage: Storage):
        self.storage = storage

    @property
    def container(self) -> ContainerClient:
        return self.storage.container(CONTAINER)

    def put(self, wave_id: str, runs: list[Run], members: Sequence[Member] = (),
            claims: Sequence[DeferredClaim] = ()) -> None:
        self.container.upload_blob(f"{wave_id}.json", to_json(runs, members, claims).encode(), overwrite=True)

    def get(self, wave_id: str) -> list[Run]:
        return self.get_record(wave_id).runs

    def get_record(self, wave_id: str) -> BacklogRecord:
        try:
            body = self.container.download_blob(f"{wave_id}.json").readall()
        except ResourceNotFoundError:
            return BacklogRecord()
        return from_json(body)

    def waves(self) -> list[str]:
        return [blob.name.removesuffix(".json") for blob in self.container.list_blobs()]

    def remove(self, wave_id: str) -> None:
        try:
            self.container.delete_blob(f"{wave_id}.json")
        except ResourceNotFoundError:
            pass
