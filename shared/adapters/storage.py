"""Clients for Table, Queue and Blob storage, built once per process from the settings.

Azurite is reached with its connection string; every real account through DefaultAzureCredential
(config.py refuses account keys for real endpoints). Tables, queues and containers are created on
first use, once per process, so a fresh Azurite or a fresh Storage account needs no set-up step.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from functools import cached_property
from typing import Any, TypeVar

import requests
from azure.core.credentials import TokenCredential
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.core.pipeline.transport import RequestsTransport
from azure.data.tables import TableClient, TableServiceClient
from azure.storage.blob import BlobServiceClient, ContainerClient, LinearRetry
from azure.storage.queue import (
    BinaryBase64DecodePolicy,
    BinaryBase64EncodePolicy,
    QueueClient,
)

from shared.adapters.throttling import ScalabilityTargets, ThrottledTransport
from shared.config import ConfigError, Settings, StorageSettings

# Table transactions are limited to 100 operations, all in one partition.
MAX_BATCH = 100
# How many transactions a fan-out keeps in flight at once.
TRANSACTIONS_IN_FLIGHT = 4
# Every table and blob container the app uses (names before the prefix).
TABLES = ("tasks", "dependencies", "runs", "decisions", "counters", "bases", "waves", "slots", "timers",
          "notifications", "githeads")
CONTAINERS = ("run-logs", "build-contexts", "run-backlog")

T = TypeVar("T")


def _transport() -> RequestsTransport:
    """One HTTP session for all clients of a process, sized for the dispatcher's parallel sends.

    `trust_env` is off: the SDK would otherwise read the proxy variables of the whole environment
    on every request, a measurable share of each call's CPU time here.
    """
    session = requests.Session()
    session.trust_env = False
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=32)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return RequestsTransport(session=session, session_owner=False)


def _storage_retry() -> LinearRetry:
    """Blob and Queue retries: two, about a second apart. The SDK's default (15 s, then 18 s,
    24 s, …) keeps a caller waiting a minute and more while storage is down, and every caller here
    has a retry of its own (queue redelivery, Event Grid, the API's 503 with Retry-After)."""
    return LinearRetry(backoff=1, random_jitter_range=1, retry_total=2)


def _table_retry() -> dict[str, Any]:
    """Table retries: Azure answers 503 ServerBusy over its scalability targets (~2,000 entities/s
    per partition) and expects the client to back off. Eight tries from 0.1 s doubling to a 5 s
    ceiling ride out a busy second without making an outage (connection errors, retried 3 times
    by the SDK) wait longer."""
    return {"retry_status": 8, "retry_backoff_factor": 0.1, "retry_backoff_max": 5}


def _required(uri: str | None) -> str:
    """A service URI that config.load guarantees whenever no connection string is set."""
    if not uri:
        raise ConfigError("a storage service URI is missing")
    return uri


def _credential(storage: StorageSettings) -> TokenCredential:
    from shared.adapters.credentials import default_credential

    return default_credential(storage.client_id)


class Storage:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._lock = threading.Lock()
        self._tables: dict[str, TableClient] = {}
        self._queues: dict[str, QueueClient] = {}
        self._containers: dict[str, ContainerClient] = {}
        shared_transport = _transport()
        # Azure's limits on Azurite, where asked (the test bed): one set of buckets per account.
        self.targets = (ScalabilityTargets(settings.storage.simulate_targets)
                        if settings.storage.simulate_targets else None)
        self._transports: dict[str, Any] = {
            service: (ThrottledTransport(shared_transport, self.targets, service) if self.targets
                      else shared_transport)
            for service in ("table", "queue", "blob")
        }

    @cached_property
    def _table_service(self) -> TableServiceClient:
        s = self.settings.storage
        if s.connection_string:
            return TableServiceClient.from_connection_string(s.connection_string,
                                                             transport=self._transports["table"],
                                                             **_table_retry())
        return TableServiceClient(endpoint=_required(s.table_uri), credential=_credential(s),
                                  transport=self._transports["table"], **_table_retry())

    @cached_property
    def _blob_service(self) -> BlobServiceClient:
        s = self.settings.storage
        if s.connection_string:
            return BlobServiceClient.from_connection_string(s.connection_string,
                                                            transport=self._transports["blob"],
                                                            retry_policy=_storage_retry())
        return BlobServiceClient(account_url=_required(s.blob_uri), credential=_credential(s),
                                 transport=self._transports["blob"], retry_policy=_storage_retry())

    def table(self, name: str) -> TableClient:
        """The table `<prefix><name>`, created if missing."""
        full = self.settings.table(name)
        with self._lock:
            client = self._tables.get(full)
            if client is None:
                client = self._table_service.get_table_client(full)
                try:
                    self._table_service.create_table(full)
                except ResourceExistsError:
                    pass
                self._tables[full] = client
            return client

    def _queue_client(self, name: str) -> QueueClient:
        s = self.settings.storage
        # Base64, like the Functions queue trigger expects by default.
        policies = dict(
            message_encode_policy=BinaryBase64EncodePolicy(),
            message_decode_policy=BinaryBase64DecodePolicy(),
            transport=self._transports["queue"],
            retry_policy=_storage_retry(),
        )
        if s.connection_string:
            return QueueClient.from_connection_string(s.connection_string, name, **policies)
        return QueueClient(account_url=_required(s.queue_uri), queue_name=name, credential=_credential(s),
                           **policies)

    def queue(self, name: str) -> QueueClient:
        with self._lock:
            client = self._queues.get(name)
            if client is None:
                client = self._queue_client(name)
                try:
                    client.create_queue()
                except ResourceExistsError:
                    pass
                self._queues[name] = client
            return client

    def container(self, name: str) -> ContainerClient:
        """The blob container `<prefix>-<name>`, created if missing."""
        full = self.settings.container(name)
        with self._lock:
            client = self._containers.get(full)
            if client is None:
                client = self._blob_service.get_container_client(full)
                try:
                    client.create_container()
                except ResourceExistsError:
                    pass
                self._containers[full] = client
            return client

    def drop_all(self) -> None:
        """Delete every table, container and queue of this prefix (tests and benchmarks clean up)."""
        for name in TABLES:
            self._table_service.delete_table(self.settings.table(name))
        for name in CONTAINERS:
            with contextlib.suppress(ResourceNotFoundError):
                self._blob_service.delete_container(self.settings.container(name))
        for name in (self.settings.build_queue, self.settings.poison_queue):
            with contextlib.suppress(ResourceNotFoundError):
                self._queue_client(name).delete_queue()


def submit(table: TableClient, operations: list[Any]) -> None:
    """`table.submit_transaction(operations)`, except that one upsert alone is sent as a plain
    upsert: the same write (one entity is atomic by itself, and fails the same way), without the
    SDK's multipart body built and parsed for it, which is most of a small write's client CPU
    (docs/scale.md, "push -> queued at N=1")."""
    if len(operations) == 1 and operations[0][0] == "upsert":
        _, entity, *options = operations[0]
        table.upsert_entity(entity, **(options[0] if options else {}))
        return
    table.submit_transaction(operations)


def partition_is_empty(table: TableClient, partition: str) -> bool:
    """Whether `partition` holds no entity: one page of at most one key (how a table learns that
    the rows an older schema kept there are all migrated)."""
    probe = table.query_entities("PartitionKey eq @pk", parameters={"pk": partition}, select=["RowKey"],
                                 results_per_page=1).by_page()
    return not next(iter(next(probe, [])), None)


def chunks(items: list[T], size: int = MAX_BATCH) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
