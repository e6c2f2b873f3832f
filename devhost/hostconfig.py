"""The parts of host.json that devhost honours.

`extensions.http.routePrefix`, `extensions.queues` (batchSize, newBatchThreshold,
maxPollingInterval, visibilityTimeout, maxDequeueCount, messageEncoding) and
`logging.logLevel.default`. Defaults are the Functions host's documented defaults, so an app
without these keys behaves as it would in Azure.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOST_FILE = "host.json"

# The Queue service hands out at most 32 messages per request, hence the host's limit.
MAX_BATCH_SIZE = 32

_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:\.(\d{1,7}))?)?$")

_LOG_LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "information": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "none": logging.CRITICAL + 10,
}


class HostConfigError(ValueError):
    """host.json holds something devhost cannot use."""


@dataclass(frozen=True)
class QueueOptions:
    batch_size: int = 16
    # The host's default is batchSize/2 per CPU; one CPU's worth keeps a dev machine responsive.
    new_batch_threshold: int = 8
    max_polling_interval: float = 60.0
    visibility_timeout: float = 0.0
    max_dequeue_count: int = 5
    message_encoding: str = "base64"

    @property
    def max_in_flight(self) -> int:
        # The host fetches a new batch whenever in-flight messages drop to newBatchThreshold.
        return self.batch_size + self.new_batch_threshold


@dataclass(frozen=True)
class HostConfig:
    route_prefix: str = "api"
    queues: QueueOptions = field(default_factory=QueueOptions)
    log_level: int = logging.INFO


def parse_timespan(value: Any, what: str) -> float:
    """Seconds in a .NET TimeSpan string such as `00:00:30` or `1.02:00:00`."""
    match = _TIMESPAN.match(str(value).strip()) if isinstance(value, str) else None
    if not match:
        raise HostConfigError(f"{what}: expected a TimeSpan like '00:00:30', got {value!r}")
    days, hours, minutes, seconds, fraction = match.groups()
    total = int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + int(seconds or 0)
    return total + (float(f"0.{fraction}") if fraction else 0.0)


def _int(section: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = section.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise HostConfigError(
            f"extensions.queues.{key}: expected an integer in [{low}, {high}], got {value!r}"
        )
    return value


def _queue_options(section: dict[str, Any]) -> QueueOptions:
    batch_size = _int(section, "batchSize", QueueOptions.batch_size, 1, MAX_BATCH_SIZE)
    options = QueueOptions(
        batch_size=batch_size,
        new_batch_threshold=_int(section, "newBatchThreshold", batch_size // 2, 0, 10_000),
        max_dequeue_count=_int(section, "maxDequeueCount", QueueOptions.max_dequeue_count, 1, 10_000),
        max_polling_interval=parse_timespan(
            section.get("maxPollingInterval", "00:01:00"), "extensions.queues.maxPollingInterval"
        ),
        visibility_timeout=parse_timespan(
            section.get("visibilityTimeout", "00:00:00"), "extensions.queues.visibilityTimeout"
        ),
        message_encoding=str(section.get("messageEncoding", "base64")).lower(),
    )
    if options.max_polling_interval < 0.1:
        raise HostConfigError("extensions.queues.maxPollingInterval: the minimum is 00:00:00.1")
    if options.message_encoding not in ("base64", "none"):
        raise HostConfigError("extensions.queues.messageEncoding: expected 'base64' or 'none'")
    return options


def load_host_config(root: Path) -> HostConfig:
    path = root / HOST_FILE
    if not path.is_file():
        return HostConfig()
    try:
        document = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, json.JSONDecodeError) as exc:
        raise HostConfigError(f"{path}: cannot read it as JSON ({exc})") from exc

    extensions = document.get("extensions") or {}
    route_prefix = (extensions.get("http") or {}).get("routePrefix", "api")
    level_name = str(((document.get("logging") or {}).get("logLevel") or {}).get("default", "Information"))
    return HostConfig(
        route_prefix=str(route_prefix).strip("/"),
        queues=_queue_options(extensions.get("queues") or {}),
        log_level=_LOG_LEVELS.get(level_name.lower(), logging.INFO),
    )
