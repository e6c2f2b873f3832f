"""Queue triggers, with the Functions host's queue semantics (host.json `extensions.queues`).

- Polling: up to `batchSize` messages per request; a new batch is fetched when the messages in
  flight drop to `newBatchThreshold`; an empty queue is polled with exponential backoff from 100 ms
  up to `maxPollingInterval`.
- Leases: a received message stays invisible while its function runs; the lease is renewed every
  half lease, so a long build is not redelivered to a second worker while it is still running.
- Outcome: success deletes the message. Failure makes it visible again after `visibilityTimeout`,
  or, once its dequeue count reached `maxDequeueCount`, moves the original message text to
  `<queue>-poison`. Messages seen with a count already beyond the limit (a crash mid-invocation)
  go straight to the poison queue. A `-poison` queue has no poison queue of its own; a failed
  message there stays invisible until its lease ends, which is what keeps the host from spinning.
- Bodies are Base64 (or raw with `messageEncoding: none`); what the function receives is an
  `azure.functions.QueueMessage` with id, body, dequeue count, times and pop receipt.

Each queue function gets its own thread pool sized to the most messages it can have in flight, so
a slow queue cannot starve HTTP requests or other queues.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import logging
import math
import re
from collections.abc import Mapping

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.functions.queue import QueueMessage as FunctionQueueMessage
from azure.identity.aio import DefaultAzureCredential
from azure.storage.queue import QueueMessage as StorageQueueMessage
from azure.storage.queue.aio import QueueClient, QueueServiceClient

from .hostconfig import QueueOptions
from .invocation import Invoker
from .loader import FunctionEntry
from .settings import SettingsError

log = logging.getLogger("devhost.queues")

POISON_SUFFIX = "-poison"
MIN_POLLING_INTERVAL = 0.1
DEFAULT_LEASE_SECONDS = 60
DEFAULT_CONNECTION = "AzureWebJobsStorage"
# Azure Storage queue names: 3-63 lower-case letters, digits and single hyphens, no hyphen at either end.
_QUEUE_NAME = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


def queue_name(resolved: str) -> str:
    """The queue a binding names; lower-cased as the host does, and checked so a typo fails at startup."""
    name = resolved.lower()
    if not _QUEUE_NAME.match(name):
        raise SettingsError(f"{name!r} is not a valid queue name (3-63 of a-z, 0-9 and single hyphens)")
    return name


class QueueConnections:
    """One QueueServiceClient per binding `connection` setting, resolved like the host does."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        self._clients: dict[str, QueueServiceClient] = {}
        self._credentials: list[DefaultAzureCredential] = []

    def service(self, connection: str) -> QueueServiceClient:
        if connection not in self._clients:
            self._clients[connection] = self._create(connection)
        return self._clients[connection]

    def _create(self, connection: str) -> QueueServiceClient:
        # The host also looks the name up with an `AzureWebJobs` prefix ("Storage" -> AzureWebJobsStorage).
        for name in (connection, f"AzureWebJobs{connection}"):
            if value := self._environ.get(name):
                return QueueServiceClient.from_connection_string(value)
            if uri := self._environ.get(f"{name}__queueServiceUri"):
                credential = DefaultAzureCredential(
                    managed_identity_client_id=self._environ.get(f"{name}__clientId")
                )
                self._credentials.append(credential)
                return QueueServiceClient(uri, credential=credential)
        raise SettingsError(
            f"connection {connection!r}: set {connection} to a connection string, "
            f"or {connection}__queueServiceUri for an identity-based connection"
        )

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        for credential in self._credentials:
            await credential.close()


async def _create_if_missing(queue: QueueClient) -> None:
    try:
        await queue.create_queue()
    except ResourceExistsError:
        pass


class _Lease:
    """A received message held invisible; every visibility update hands out a new pop receipt."""

    def __init__(self, queue: QueueClient, message: StorageQueueMessage) -> None:
        self._queue = queue
        self.message_id = message.id
        self.pop_receipt = message.pop_receipt

    async def extend(self, seconds: float) -> None:
        updated = await self._queue.update_message(
            self.message_id, self.pop_receipt, visibility_timeout=math.ceil(seconds)
        )
        self.pop_receipt = updated.pop_receipt

    async def delete(self) -> None:
        await self._queue.delete_message(self.message_id, self.pop_receipt)


class QueueListener:
    def __init__(
        self,
        entry: FunctionEntry,
        queue_name: str,  # validated by queue_name()
        service: QueueServiceClient,
        options: QueueOptions,
        invoker: Invoker,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> None:
        self.entry = entry
        self.queue_name = queue_name
        self._queue = service.get_queue_client(self.queue_name)
        self.poison_name = (
            None if self.queue_name.endswith(POISON_SUFFIX) else self.queue_name + POISON_SUFFIX
        )
        self._poison = service.get_queue_client(self.poison_name) if self.poison_name else None
        self._poison_ready = False
        self._options = options
        self._invoker = invoker
        self._lease_seconds = max(2.0, lease_seconds)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=options.max_in_flight, thread_name_prefix=f"queue-{entry.name}"
        )
        self._stopping = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._receiving: asyncio.Future[list[StorageQueueMessage]] | None = None

    async def prepare(self) -> bool:
        """Create the queue so producers can send before the first poll."""
        try:
            await _create_if_missing(self._queue)
            return True
        except AzureError as exc:
            log.warning(
                "Queue '%s' could not be created yet (%s); will retry while polling", self.queue_name, exc
            )
            return False

    def stop(self) -> None:
        self._stopping.set()
        self._slot_freed.set()
        if self._receiving is not None:
            self._receiving.cancel()

    async def run(self) -> None:
        """Poll until stopped, then wait for the messages in flight."""
        delay = MIN_POLLING_INTERVAL
        while not self._stopping.is_set():
            if len(self._in_flight) > self._options.new_batch_threshold:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            # A receive can take long against storage that does not answer (the SDK retries);
            # stop() cancels it so shutdown does not wait for that.
            self._receiving = asyncio.ensure_future(self._receive())
            try:
                messages = await self._receiving
            except asyncio.CancelledError:
                if self._stopping.is_set():
                    break
                raise
            except ResourceNotFoundError:
                if not await self.prepare():
                    await self._sleep(self._options.max_polling_interval)
                continue
            except AzureError as exc:
                log.warning("Polling queue '%s' failed: %s", self.queue_name, exc)
                await self._sleep(self._options.max_polling_interval)
                continue
            if not messages:
                await self._sleep(delay)
                delay = min(delay * 2, self._options.max_polling_interval)
                continue
            delay = MIN_POLLING_INTERVAL
            for message in messages:
                task = asyncio.create_task(self._process(message))
                self._in_flight.add(task)
                task.add_done_callback(self._finished)
        if self._in_flight:
            await asyncio.wait(self._in_flight)
        self._executor.shutdown(wait=False)

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            pass

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._slot_freed.set()

    async def _receive(self) -> list[StorageQueueMessage]:
        size = self._options.batch_size
        pages = self._queue.receive_messages(
            messages_per_page=size, max_messages=size, visibility_timeout=math.ceil(self._lease_seconds)
        )
        return [message async for message in pages]

    def _decode(self, content: str) -> bytes:
        if self._options.message_encoding == "none":
            return content.encode("utf-8")
        return base64.b64decode(content, validate=True)

    async def _process(self, message: StorageQueueMessage) -> None:
        lease = _Lease(self._queue, message)
        try:
            # The SDK types dequeue_count Optional (a sent message has none); a received one has it.
            if self._poison is not None and (message.dequeue_count or 0) > self._options.max_dequeue_count:
                # Dequeued too often without an outcome (a host stopped mid-invocation): no more tries.
                await self._to_poison(message, lease)
                return
            succeeded = await self._attempt(message, lease)
            await self._settle(message, lease, succeeded)
        except AzureError as exc:
            # The message is still leased; it reappears when the lease ends and is retried then.
            log.warning("Queue '%s' message %s: %s", self.queue_name, message.id, exc)
        except Exception:
            log.exception("Queue '%s' message %s: unexpected error in devhost", self.queue_name, message.id)

    async def _attempt(self, message: StorageQueueMessage, lease: _Lease) -> bool:
        try:
            body = self._decode(message.content)
        except (binascii.Error, ValueError):
            log.error(
                "Message %s on queue '%s' is not valid Base64 (host.json messageEncoding is base64)",
                message.id,
                self.queue_name,
            )
            return False
        trigger_value = FunctionQueueMessage(
            id=message.id,
            body=body,
            dequeue_count=message.dequeue_count,
            expiration_time=message.expires_on,
            insertion_time=message.inserted_on,
            time_next_visible=message.next_visible_on,
            pop_receipt=message.pop_receipt,
        )
        inserted = message.inserted_on.isoformat() if message.inserted_on else None
        details = f"MessageId: {message.id}, DequeueCount: {message.dequeue_count}, InsertionTime: {inserted}"
        finished = asyncio.Event()
        keeper = asyncio.create_task(self._keep_invisible(lease, finished))
        try:
            outcome = await self._invoker.invoke(
                self.entry,
                trigger_value,
                reason=f"New queue message detected on '{self.queue_name}'.",
                details=details,
                executor=self._executor,
            )
        finally:
            # Let a renewal in progress finish instead of cancelling it: a cancelled update may
            # still change the pop receipt on the server, and what follows needs the latest one.
            finished.set()
            await keeper
        return outcome.succeeded

    async def _keep_invisible(self, lease: _Lease, finished: asyncio.Event) -> None:
        while True:
            try:
                await asyncio.wait_for(finished.wait(), self._lease_seconds / 2)
                return
            except TimeoutError:
                pass
            try:
                await lease.extend(self._lease_seconds)
            except AzureError as exc:
                log.warning(
                    "Could not renew the lease of message %s on '%s': %s",
                    lease.message_id,
                    self.queue_name,
                    exc,
                )

    async def _settle(self, message: StorageQueueMessage, lease: _Lease, succeeded: bool) -> None:
        if succeeded:
            await lease.delete()
        elif self._poison is None:
            log.warning(
                "Message %s on poison queue '%s' failed; it stays invisible until its lease ends",
                message.id,
                self.queue_name,
            )
        elif (message.dequeue_count or 0) >= self._options.max_dequeue_count:
            await self._to_poison(message, lease)
        else:
            await lease.extend(self._options.visibility_timeout)

    async def _to_poison(self, message: StorageQueueMessage, lease: _Lease) -> None:
        assert self._poison is not None
        log.warning(
            "Message has reached MaxDequeueCount of %d. Moving message to queue '%s'.",
            self._options.max_dequeue_count,
            self.poison_name,
        )
        if not self._poison_ready:
            await _create_if_missing(self._poison)
            self._poison_ready = True
        # The original text, still encoded, so the poison function decodes it like the first one did.
        await self._poison.send_message(message.content)
        await lease.delete()
