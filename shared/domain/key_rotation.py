"""Key rotation of the secrets at rest: what re-encrypting them with the newest key did."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ResealReport:
    """What re-encrypting the stored secrets with the first configured key did, task by task."""

    resealed: list[str] = field(default_factory=list)  # re-encrypted with the first key now
    current: list[str] = field(default_factory=list)  # already encrypted with it
    unreadable: list[str] = field(default_factory=list)  # no configured key opens them: left as they were
    busy: list[str] = field(default_factory=list)  # changed on every attempt: run the rotation again
    primary_key: str | None = None  # the fingerprint of the encrypting key (never the key)
    keys: int = 0  # how many keys are configured

    @property
    def complete(self) -> bool:
        """Whether every stored secret is now sealed with the first key (the others can go)."""
        return not self.unreadable and not self.busy

    def to_dict(self) -> dict[str, Any]:
        return {"resealed": self.resealed, "current": self.current, "unreadable": self.unreadable,
                "busy": self.busy, "complete": self.complete, "primary_key": self.primary_key,
                "keys": self.keys}
