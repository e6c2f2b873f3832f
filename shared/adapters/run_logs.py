"""Run logs in Blob storage: one append blob per run, `<run id>.log`, readable while it grows."""

from __future__ import annotations

import logging
import threading

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.storage.blob import BlobClient

from shared.adapters.storage import Storage
from shared.domain.secrets import SecretMask

log = logging.getLogger(__name__)

# Append blocks are limited to 4 MiB; log lines are buffered and flushed well below that, and at
# least every second so that `task logs` / `task run` can follow a build while it runs.
_FLUSH_BYTES = 64 * 1024
_FLUSH_SECONDS = 1.0


class RunLogWriter:
    """Collects lines, hides secret values, and appends them to the run's blob in blocks: when a
    block fills, and at least every second from a timer, so a silent build step's last line is
    readable at once and a crash loses at most a second of log."""

    def __init__(self, blob: BlobClient, secrets: list[str]):
        self._blob = blob
        self._mask = SecretMask(secrets)
        self._buffer: list[str] = []
        self._size = 0
        self._lock = threading.Lock()
        self._closed = threading.Event()
        threading.Thread(target=self._flush_every_second, daemon=True, name="log-flush").start()

    def __call__(self, line: str) -> None:
        text = self._mask(line.rstrip("\n")) + "\n"
        with self._lock:
            self._buffer.append(text)
            self._size += len(text)
            if self._size >= _FLUSH_BYTES:
                self._flush_locked()

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def close(self) -> None:
        self._closed.set()
        self.flush()

    def _flush_every_second(self) -> None:
        while not self._closed.wait(_FLUSH_SECONDS):
            try:
                self.flush()
            except Exception:  # storage trouble: the next flush (or close) tries again
                log.warning("run log flush failed", exc_info=True)

    def _flush_locked(self) -> None:
        if not self._buffer:
            return
        # Masked again as a whole: a secret that arrived split across lines is hidden too.
        data = self._mask("".join(self._buffer)).encode()
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
