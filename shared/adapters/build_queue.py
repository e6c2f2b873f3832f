"""The build-runs queue in Queue Storage: one Base64 message per run, as the Functions trigger expects."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from shared.adapters.storage import Storage
from shared.domain.messages import encode

# Azurite and Storage both answer sends faster in parallel.
SEND_CONCURRENCY = 16


class StorageBuildQueue:
    def __init__(self, storage: Storage, name: str):
        self.storage = storage
        self.name = name
        self._pool = ThreadPoolExecutor(max_workers=SEND_CONCURRENCY, thread_name_prefix="enqueue")

    def is_empty(self) -> bool:
        """No message waiting (visible or not): the queue's count is approximate but never misses all."""
        count = self.storage.queue(self.name).get_queue_properties().approximate_message_count
        return not count

    def send(self, run_ids: list[str]) -> None:
        client = self.storage.queue(self.name)
        futures = [self._pool.submit(client.send_message, encode(run_id)) for run_id in run_ids]
        for future in futures:
            future.result()  # re-raises a failed send: it is never silent
