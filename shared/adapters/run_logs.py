"""Run logs in Blob storage: one append blob per run, `<run id>.log`, readable while it grows."""

from __future__ import annotations

import threading
import time

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.storage.blob import BlobClient

from shared.adapters.storage import Storage
from shared.domain.secrets import redact

# Append blocks are limited to 4 MiB; log lines are buffered and flushed well below that, and at
# least every second so that `task logs` / `task run` can follow a build while it runs.
_FLUSH_BYTES = 64 * 1024
_FLUSH_SECONDS = 1.0


class RunLogWriter:
    """Collects lines, hides secret values, and appends them to the run's blob in blocks."""

    def __init__(self, blob: BlobClient, secrets: list[str]):
        self._blob = blob
        self._secrets = [s for s in secrets if s]
        self._buffer: list[str] = []
        self._size = 0
        self._flushed_at = time.monotonic()
        self._lock = threading.Lock()

    def __call__(self, line: str) -> None:
        text = redact(line.rstrip("\n"), self._secrets) + "\n"
        with self._lock:
            self._buffer.append(text)
            self._size += len(text)
            if self._size >= _FLUSH_BYTES or time.monotonic() - self._flushed_at >= _FLUSH_SECONDS:
                self._flush_locked()

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        self._flushed_at = time.monotonic()
        if not self._buffer:
            return
        data = "".join(self._buffer).encode()
        for start in range(0, len(data), 4 * 1024 * 1024):
            self._blob.append_block(data[start : start + 4 * 1024 * 1024])
        self._buffer, self._size = [], 0


class BlobRunLogs:
    def __init__(self, storage: Storage):
        self.storage = storage

    def _blob(self, run_id: str) -> BlobClient:
        return self.storage.container("run-logs").get_blob_client(f"{run_id}.log")

    def writer(self, run_id: str, secrets: list[str]) -> RunLogWriter:
        blob = self._blob(run_id)
        if not blob.exists():
            blob.create_append_blob()
        return RunLogWriter(blob, secrets)

    def read(self, run_id: str, offset: int = 0) -> bytes:
        """The log from `offset` on (b'' if nothing was written yet)."""
        try:
            return self._blob(run_id).download_blob(offset=offset or None).readall()
        except ResourceNotFoundError:
            return b""
        except HttpResponseError as exc:  # asking past the end of a blob answers 416
            if exc.status_code == 416:
                return b""
            raise
