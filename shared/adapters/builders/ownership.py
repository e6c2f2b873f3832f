"""Which process owns a build's leftovers, and whether that process is provably gone.

Several workers, stacks and test sessions on one machine share buildah's storage, so a worker may
only clean up what its own kind made AND what no live process still uses. A build is named by a
marker that holds its owner: the boot, the pid and the pid's start time (a pid alone is reused;
with its start time and the boot it names one process for good). The owner is dead when this
machine booted since, or no process has that pid with that start time.
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
_MARKER = re.compile(r"(?P<boot>[0-9a-f]{32})\.(?P<pid>[0-9]+)\.(?P<start>[0-9]+)\.(?P<build>[0-9a-f]{12})")


def _boot_id() -> str:
    return _BOOT_ID.read_text().strip().replace("-", "")


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat, field 22), or None
    when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces or ')': split after the last.
    return int(stat.rsplit(")", 1)[1].split()[19])


@dataclass(frozen=True)
class Owner:
    boot: str
    pid: int
    start: int

    @classmethod
    def this_process(cls) -> Owner:
        pid = os.getpid()
        start = _start_ticks(pid)
        assert start is not None  # this process exists
        return cls(_boot_id(), pid, start)

    def is_alive(self) -> bool:
        return self.boot == _boot_id() and _start_ticks(self.pid) == self.start


def new_marker(owner: Owner) -> str:
    """A name for one build of `owner`: `<boot>.<pid>.<start>.<random>`."""
    return f"{owner.boot}.{owner.pid}.{owner.start}.{uuid.uuid4().hex[:12]}"


def owner_of(marker: str) -> Owner | None:
    """The owner a marker names; None for anything that is not one of ours."""
    match = _MARKER.fullmatch(marker)
    if not match:
        return None
    return Owner(match["boot"], int(match["pid"]), int(match["start"]))


def processes_naming(markers: set[str]) -> set[str]:
    """The markers some live process carries on its command line (a build still going on, e.g. a
    buildah whose worker died a moment ago and whose kill has not landed yet)."""
    found: set[str] = set()
    if not markers:
        return found
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode("utf-8", "replace")
        except OSError:
            continue
        found.update(m for m in markers if m in cmdline)
    return found
