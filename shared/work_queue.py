"""The build-runs queue: one message per run, `{"v": 1, "runId": "da1"}`, Base64 like Functions expects."""

from __future__ import annotations

import json
from concurrent.futures import Future, ThreadPoolExecutor

from shared.storage import Storage

MESSAGE_VERSION = 1
# Azurite and Storage both answer sends faster in parallel; 16 keeps a 1000-run fan-out well under 2 s.
_SEND_CONCURRENCY = 16


class MalformedMessage(ValueError):
    pass


def encode(run_id: str) -> bytes:
    return json.dumps({"v": MESSAGE_VERSION, "runId": run_id}).encode()


def decode(body: bytes | str) -> str:
    try:
        data = json.loads(body)
        run_id = data["runId"]
    except (ValueError, KeyError, TypeError) as exc:
        raise MalformedMessage(f"not a build-run message: {body[:200]!r}") from exc
    if not isinstance(run_id, str) or not run_id:
        raise MalformedMessage("runId must be a non-empty string")
    return run_id


class BuildQueue:
    def __init__(self, storage: Storage, name: str):
        self.storage = storage
        self.name = name
        self._pool = ThreadPoolExecutor(max_workers=_SEND_CONCURRENCY, thread_name_prefix="enqueue")

    def is_empty(self) -> bool:
        """No message waiting (visible or not): the queue's count is approximate but never misses all."""
        return self.storage.queue(self.name).get_queue_properties().approximate_message_count == 0

    def send(self, run_ids: list[str]) -> None:
        for future in self.send_async(run_ids):
            future.result()  # re-raises a failed send: it is never silent

    def send_async(self, run_ids: list[str]) -> list[Future]:
        """Start sending; the caller waits on the futures (lets dispatch overlap writes and sends)."""
        client = self.storage.queue(self.name)
        return [self._pool.submit(client.send_message, encode(run_id)) for run_id in run_ids]
