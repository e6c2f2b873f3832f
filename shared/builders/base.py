"""The contract every builder implements."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

# Terminal statuses a builder may report; the worker maps them onto the run record unchanged.
SUCCEEDED, FAILED, ERROR, TIMEOUT, CANCELED = "Succeeded", "Failed", "Error", "Timeout", "Canceled"


@dataclass(frozen=True)
class BuildContext:
    """Where the sources come from: a local directory, an uploaded archive, or a git URL + branch."""

    path: str | None = None
    git_url: str | None = None
    branch: str | None = None
    git_token: str | None = None
    archive_path: str | None = None

    def describe(self) -> str:
        """A form safe to log: never includes the token."""
        if self.git_url:
            return f"{self.git_url}#{self.branch or 'HEAD'}"
        return self.path or self.archive_path or "?"


@dataclass(frozen=True)
class BuildRequest:
    run_id: str
    context: BuildContext
    dockerfile: str
    images: list[str]
    build_args: dict[str, str] = field(default_factory=dict)
    secret_args: dict[str, str] = field(default_factory=dict)
    platform: str = "linux"
    timeout_seconds: int = 3600
    # Normalized base references the Dockerfile uses (from shared.dockerfile), to report digests.
    base_images: list[str] = field(default_factory=list)
    # A forced run: no layer cache, bases pulled anew.
    no_cache: bool = False
    # Set when the run is canceled while it builds; builders stop as soon as they can.
    cancel: threading.Event = field(default_factory=threading.Event, compare=False)


@dataclass(frozen=True)
class BuildResult:
    status: str
    output_digest: str | None = None
    base_digests: dict[str, str] = field(default_factory=dict)
    reason: str | None = None


LogSink = Callable[[str], None]


class Builder(Protocol):
    def build(self, request: BuildRequest, log: LogSink) -> BuildResult: ...
