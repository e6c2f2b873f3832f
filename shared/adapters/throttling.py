"""Azure Storage's scalability targets, enforced in the test bed.

Azurite accepts whatever it is sent as fast as it can; a Storage account does not. Its documented
targets (learn.microsoft.com: "Scalability and performance targets for Table storage" and "… for
Queue Storage") are about 2,000 entities per second per table partition, 20,000 per second per
account, and 2,000 messages per second per queue. Above them the service answers 503 ServerBusy
and the client is expected to back off and try again.

`ThrottledTransport` wraps the HTTP transport every Table, Queue and Blob client of a process
shares (shared/adapters/storage.py) and answers ServerBusy itself, without sending, when a
request would go over a target, so that code measured or tested on Azurite meets the limits it
would meet in Azure. It sits below the SDKs' retry policies, so their back-off is what rides the
throttling out, exactly as against the service. It is on only where asked
(`BASETRIGGER_SIMULATE_TARGETS`): `bench/scale.py` and the tests that check the retries.

What a request costs: one entity or message per request, and one per operation of a table
transaction (all in one partition). A table query costs one against its partition if its filter
names one (`PartitionKey eq '…'`), else one against the account only. Like the service's own
accounting, this is a model, not a meter: Azure also throttles on bandwidth and on hot key ranges
within a partition, which nothing here simulates.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import requests
from azure.core.pipeline.transport import HttpRequest, HttpResponse, HttpTransport, RequestsTransportResponse

from shared.config import StorageTargets


@dataclass
class _Bucket:
    rate: float
    tokens: float
    at: float


@dataclass
class ScalabilityTargets:
    """Token buckets (a second's worth of burst each), shared by every client of one account."""

    targets: StorageTargets = field(default_factory=StorageTargets)
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[tuple[str, str], _Bucket] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # Requests answered ServerBusy (the benchmark prints it).
    refused: int = 0

    def admit(self, cost: int, partition: str | None = None, queue: str | None = None) -> bool:
        """Take `cost` from the account's bucket and the partition's or queue's, or from none."""
        keys: list[tuple[tuple[str, str], float]] = [(("account", ""), self.targets.account)]
        if partition is not None:
            keys.append((("partition", partition), self.targets.partition))
        if queue is not None:
            keys.append((("queue", queue), self.targets.queue))
        with self._lock:
            now = self.clock()
            buckets = [self._bucket(key, rate, now) for key, rate in keys]
            if any(b.tokens < min(cost, b.rate) for b in buckets):
                self.refused += 1
                return False
            for bucket in buckets:
                bucket.tokens -= cost
            return True

    def _bucket(self, key: tuple[str, str], rate: float, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(rate, rate, now)
        bucket.tokens = min(rate, bucket.tokens + (now - bucket.at) * rate)
        bucket.at = now
        return bucket


# `table(PartitionKey='a',RowKey='b')`: the partition of a point operation, quotes doubled inside.
_POINT = re.compile(r"\(PartitionKey='((?:[^']|'')*)'")
# `$filter=PartitionKey eq 'a' and …`: a query that reads one partition.
_FILTER = re.compile(r"^\s*PartitionKey\s+eq\s+'((?:[^']|'')*)'")


def _path(url: str) -> list[str]:
    """The path after the account (`/devstoreaccount1/t(...)` on Azurite, `/t(...)` in Azure)."""
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    if segments and parts.hostname in ("127.0.0.1", "localhost") and segments[0].startswith("devstore"):
        segments = segments[1:]
    return segments


def _table_partition(request: Any) -> tuple[str, str] | None:
    """(table, partition) a table request writes or reads, or None for an account-wide one."""
    segments = _path(request.url)
    if not segments or segments[0].startswith("Tables"):
        return None
    table, _, rest = segments[0].partition("(")
    point = _POINT.search(unquote("(" + rest)) if rest else None
    if point:
        return table, point.group(1).replace("''", "'")
    query = urlsplit(request.url).query
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if unquote(name) == "$filter":
            match = _FILTER.match(unquote(value))
            return (table, match.group(1).replace("''", "'")) if match else None
    if request.method == "POST" and request.body:  # an insert names its partition in the body
        try:
            body = json.loads(request.body)
        except (ValueError, TypeError):
            return None
        if isinstance(body, dict) and isinstance(body.get("PartitionKey"), str):
            return table, body["PartitionKey"]
    return None


def _operations(request: Any) -> list[Any]:
    """The operations of a table transaction (a `$batch` holding one changeset), else the request."""
    info = getattr(request, "multipart_mixed_info", None)
    if not info:
        return [request]
    found: list[Any] = []
    for part in info[0]:
        found.extend(_operations(part))
    return found


def _server_busy(request: HttpRequest, service: str) -> HttpResponse:
    """The answer the service gives over its targets: 503 ServerBusy, in the service's own format."""
    message = "The server is busy."
    response = requests.Response()
    response.status_code = 503
    response.reason = "Server Busy"
    response.url = request.url
    if service == "table":
        response.headers["Content-Type"] = "application/json;odata=minimalmetadata"
        error = {"code": "ServerBusy", "message": {"lang": "en-US", "value": message}}
        body = json.dumps({"odata.error": error})
    else:
        response.headers["Content-Type"] = "application/xml"
        body = (f'<?xml version="1.0" encoding="utf-8"?><Error><Code>ServerBusy</Code>'
                f"<Message>{message}</Message></Error>")
    response.headers["x-ms-error-code"] = "ServerBusy"
    response._content = body.encode()  # noqa: SLF001 (a requests.Response built by hand)
    answer: HttpResponse = RequestsTransportResponse(request, response)
    return answer


class ThrottledTransport(HttpTransport):  # type: ignore[type-arg]
    """The process's transport for one storage service, refusing what goes over the targets."""

    def __init__(self, inner: Any, targets: ScalabilityTargets, service: str):
        self.inner = inner
        self.targets = targets
        self.service = service

    def __enter__(self) -> ThrottledTransport:
        self.inner.__enter__()
        return self

    def __exit__(self, *args: Any) -> None:
        self.inner.__exit__(*args)

    def open(self) -> None:
        self.inner.open()

    def close(self) -> None:
        self.inner.close()

    def send(self, request: HttpRequest, **kwargs: Any) -> HttpResponse:
        if not self._admitted(request):
            return _server_busy(request, self.service)
        response: HttpResponse = self.inner.send(request, **kwargs)
        return response

    def _admitted(self, request: HttpRequest) -> bool:
        if self.service == "table":
            operations = _operations(request)
            where = _table_partition(operations[0])
            partition = "/".join(where) if where else None
            return self.targets.admit(len(operations), partition=partition)
        if self.service == "queue":
            segments = _path(request.url)
            queue = segments[0] if len(segments) >= 2 and segments[1] == "messages" else None
            return self.targets.admit(1, queue=queue)
        return self.targets.admit(1)
