"""Clients for Table, Queue and Blob storage, built once per process from the settings.

Azurite is reached with its connection string; every real account through DefaultAzureCredential
(config.py refuses account keys for real endpoints). Tables, queues and containers are created on
first use, once per process, so a fresh Azurite or a fresh Storage account needs no set-up step.
"""

from __future__ import annotations

import threading
from functools import cached_property

from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableClient, TableServiceClient
from azure.storage.blob import BlobServiceClient, ContainerClient
from azure.storage.queue import (
    BinaryBase64DecodePolicy,
    BinaryBase64EncodePolicy,
    QueueClient,
)

from shared.config import Settings, StorageSettings

# Table transactions are limited to 100 operations, all in one partition.
MAX_BATCH = 100


def _credential(storage: StorageSettings):
    from shared.credentials import default_credential

    return default_credential(storage.client_id)


class Storage:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._lock = threading.Lock()
        self._tables: dict[str, TableClient] = {}
        self._queues: dict[str, QueueClient] = {}
        self._containers: dict[str, ContainerClient] = {}

    @cached_property
    def _table_service(self) -> TableServiceClient:
        s = self.settings.storage
        if s.connection_string:
            return TableServiceClient.from_connection_string(s.connection_string)
        return TableServiceClient(endpoint=s.table_uri, credential=_credential(s))

    @cached_property
    def _blob_service(self) -> BlobServiceClient:
        s = self.settings.storage
        if s.connection_string:
            return BlobServiceClient.from_connection_string(s.connection_string)
        return BlobServiceClient(account_url=s.blob_uri, credential=_credential(s))

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
        )
        if s.connection_string:
            return QueueClient.from_connection_string(s.connection_string, name, **policies)
        return QueueClient(account_url=s.queue_uri, queue_name=name, credential=_credential(s), **policies)

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


def chunks(items: list, size: int = MAX_BATCH):
    for start in range(0, len(items), size):
        yield items[start : start + size]
