"""The stack's three parts side by side: start order, timeouts, readiness, and "is this pid ours?".

Everything that is per part lives in the part's own module (azurite, registry, host); this module
puts it into tables keyed by the part's name, which is also the name of its pid and log files.
"""

from __future__ import annotations

from collections.abc import Callable

from .azurite import azurite_identity, azurite_ports, azurite_ready
from .host import host_identity, host_ports, host_ready
from .processes import read_pid, started_by
from .registry import (
    extra_identity,
    extra_ports,
    extra_ready,
    registry_identity,
    registry_ports,
    registry_ready,
)
from .settings import StackConfig

# Start order; `down` goes the other way (the host first, so it never sees storage vanish under it).
PARTS = ("azurite", "registry", "public-registry", "auth-registry", "host")

# How long each part may take to answer after its start, in seconds.
READY_TIMEOUT = {"azurite": 60.0, "registry": 30.0, "public-registry": 30.0, "auth-registry": 30.0,
                 "host": 60.0}
# How long a part may take to exit after SIGTERM before it gets SIGKILL. The host lets in-flight
# invocations finish (devhost --grace, 30 s by default), so it gets longer.
STOP_TIMEOUT = {"azurite": 10.0, "registry": 10.0, "public-registry": 10.0, "auth-registry": 10.0,
                "host": 40.0}

READY: dict[str, Callable[[StackConfig], bool]] = {
    "azurite": azurite_ready,
    "registry": registry_ready,
    "public-registry": lambda cfg: extra_ready(cfg, "public-registry"),
    "auth-registry": lambda cfg: extra_ready(cfg, "auth-registry"),
    "host": host_ready,
}

_IDENTITY: dict[str, Callable[[StackConfig], list[str]]] = {
    "azurite": azurite_identity,
    "registry": registry_identity,
    "public-registry": lambda cfg: extra_identity(cfg, "public-registry"),
    "auth-registry": lambda cfg: extra_identity(cfg, "auth-registry"),
    "host": host_identity,
}

_PORTS: dict[str, Callable[[StackConfig], list[int]]] = {
    "azurite": azurite_ports,
    "registry": registry_ports,
    "public-registry": lambda cfg: extra_ports(cfg, "public-registry"),
    "auth-registry": lambda cfg: extra_ports(cfg, "auth-registry"),
    "host": host_ports,
}


def identity(cfg: StackConfig, part: str) -> list[str]:
    """Arguments that the part's command line must contain."""
    return _IDENTITY[part](cfg)


def part_ports(cfg: StackConfig, part: str) -> list[int]:
    return _PORTS[part](cfg)


def is_ours(cfg: StackConfig, part: str, pid: int) -> bool:
    return started_by(cfg, pid, identity(cfg, part))


def running_pid(cfg: StackConfig, part: str) -> int | None:
    """The pid of the part if it runs and is ours, else None."""
    pid = read_pid(cfg, part)
    return pid if pid is not None and is_ours(cfg, part, pid) else None
