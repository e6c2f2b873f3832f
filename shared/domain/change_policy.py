"""A task's base change policy: what the classification of a base change (shared.domain.base_changes)
means for a run that change started.

- `any` (the default): every change is built.
- `skip-identical`: a change classified `identical content` (the same layers re-wrapped, only
  timestamps) is not built; the run ends Canceled and the decision says `identical content`.
- `hold-os-release`: a change classified `os release changed` holds the wave until a person runs
  `wave resume` (that is the approval); then the run builds.

A multi-platform base is judged per platform: a task is judged by the change of the platform it
builds (Wave.platform_changes), so an amd64 task is not held because arm64's OS release changed.

Only the runs of tasks built FROM the pushed base are judged (a wave's first members, whose cause is
the wave's root): a deeper member is built on another task's new output, whose change is not the
base's. A change that is not known (`unknown (...)`: the registry could not be read in time) is
always built: the policy never skips or holds on a guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from shared.domain.base_changes import ChangeKind
from shared.domain.vocabulary import BaseChangePolicy


class Action(StrEnum):
    BUILD = "build"
    SKIP = "skip"
    HOLD = "hold"


@dataclass(frozen=True)
class PolicyVerdict:
    action: Action
    # Why, as the run's log and its decision say it.
    reason: str


def classification(change: str | None) -> ChangeKind | None:
    """The classification a wave's change line starts with (Wave.base_change); None when unknown."""
    if not change:
        return None
    # Longest first: no name is a prefix of another today, but a new one could be.
    for kind in sorted(ChangeKind, key=lambda k: len(k.value), reverse=True):
        if change == kind.value or change.startswith(kind.value + " "):
            return kind
    return None


def judge(policy: BaseChangePolicy, change: str | None, approved: bool = False,
          platform: str | None = None) -> PolicyVerdict:
    """What `policy` makes of a run whose base change is `change`: the change of the platform the
    run builds, else the wave's line (a multi-platform base's line classifies its most significant
    platform, which may not be the run's). `approved`: a person resumed the wave this policy held
    (the change is to be built). `platform`: named in the reason, when the change is its own."""
    kind = classification(change)
    named = f"base change policy {policy}" + (f", platform {platform}" if platform else "")
    if kind is None:
        return PolicyVerdict(Action.BUILD, f"built: the change is not known ({named} needs it)"
                             if policy != BaseChangePolicy.ANY else f"built: {named}")
    if policy == BaseChangePolicy.SKIP_IDENTICAL and kind == ChangeKind.IDENTICAL:
        return PolicyVerdict(Action.SKIP, f"not built: {ChangeKind.IDENTICAL} ({named})")
    if policy == BaseChangePolicy.HOLD_OS_RELEASE and kind == ChangeKind.OS_RELEASE:
        if approved:
            return PolicyVerdict(Action.BUILD, f"built: {ChangeKind.OS_RELEASE}, approved by `wave resume` "
                                 f"({named})")
        return PolicyVerdict(Action.HOLD, f"held for approval: {ChangeKind.OS_RELEASE} ({named})")
    return PolicyVerdict(Action.BUILD, f"built: {kind} ({named})")
