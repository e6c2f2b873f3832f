"""The words basetrigger's records, API, OpenAPI document and CLI share, each defined once.

This module imports nothing beyond the standard library, so the CLI can use it without loading
any Azure SDK. Each enum is a `StrEnum`: its members compare equal to the strings stored in
tables and sent over the API, so records written before these enums existed read unchanged.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum


class RunStatus(StrEnum):
    QUEUED = "Queued"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELED = "Canceled"
    ERROR = "Error"
    TIMEOUT = "Timeout"
    # Stopped by its wave's circuit breaker: waits for `wave resume` (Queued again) or `wave cancel`.
    HELD = "Held"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


# A run in one of these states never changes again.
TERMINAL = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELED, RunStatus.ERROR,
                      RunStatus.TIMEOUT})

# How a wave member stands while its run is recorded but not released yet (its bases are not built,
# or there is no room under the caps): a count in the wave's counts, next to the run statuses.
WAITING = "Waiting"


class WaveState(StrEnum):
    """Where a wave (everything one base change started) stands."""

    ACTIVE = "Active"
    HELD = "Held"  # its circuit breaker tripped: no more runs start until resumed
    CANCELED = "Canceled"
    DONE = "Done"


class Trigger(StrEnum):
    """What started a run (ACR's names)."""

    MANUAL = "Manual"
    IMAGE_UPDATE = "Image Update"
    TIMER = "Timer"  # a task timer's slot came (`task timer add`, `--schedule`)
    COMMIT = "Commit"  # a push to the context's repository and branch
    PULL_REQUEST = "Pull Request"  # a pull request opened or updated against that branch
    # A tag moved back to its earlier image after its base digest was quarantined (no build).
    ROLLBACK = "Rollback"


class UpdatePolicy(StrEnum):
    """What a run triggered by a base update does (`--update-policy`; shared.domain.rebase)."""

    REBUILD = "rebuild"  # build again from the sources
    REBASE = "rebase"  # swap the base's layers: the owner asserts the image's layers don't depend on them
    AUTO = "auto"  # rebase when that is provably equivalent to a rebuild, else rebuild


class BaseChangePolicy(StrEnum):
    """What a base change's classification means for a task (`--base-change-policy`;
    shared.domain.change_policy). Applied to the runs its base's push started (a wave's first level)."""

    ANY = "any"  # rebuild on any change
    SKIP_IDENTICAL = "skip-identical"  # `identical content`: the run is not built (decided, recorded)
    HOLD_OS_RELEASE = "hold-os-release"  # `os release changed`: the wave is Held until `wave resume`


class BuilderKind(StrEnum):
    """What made a run's image."""

    BUILDAH = "buildah"
    ACR = "acr"
    REBASE = "rebase"


class TriggerType(StrEnum):
    """Which bases of a task trigger it (ACR's `--base-image-trigger-type`)."""

    RUNTIME = "Runtime"  # the bases of the final stage's chain
    ALL = "All"  # the bases of every stage


class Outcome(StrEnum):
    """What was decided about an event, and about each task it concerned."""

    QUEUED = "queued"
    NOT_QUEUED = "not-queued"  # an event whose tasks had different outcomes, none queued
    NO_DEPENDENTS = "no-dependents"
    DIGEST_UNCHANGED = "digest-unchanged"
    # A multi-platform base moved, but not the manifest of the platform the task builds.
    PLATFORM_UNCHANGED = "platform-unchanged"
    ALREADY_TRIGGERED = "already-triggered"
    COALESCED = "coalesced"
    TRIGGER_DISABLED = "trigger-disabled"
    NOT_RUNTIME = "not-a-runtime-dependency"
    OWN_OUTPUT = "own-output"
    IN_WAVE = "in-wave"  # the task is part of the wave that pushed this image: it builds there, once
    ALREADY_RAN_IN_WAVE = "already-ran-in-wave"  # a cycle: the wave never re-enters a task
    WAVE_CANCELED = "wave-canceled"  # pushed by a run of a canceled wave: nothing more builds in it
    HELD = "held"  # a wave's circuit breaker held the rest of the wave
    QUARANTINED = "quarantined"  # the digest is quarantined (shared.domain.quarantine): nothing builds
    # The base change was `identical content` and the task's base change policy skips that: not built.
    IDENTICAL_CONTENT = "identical-content"
    # A push of a base whose digest keeps moving: one wave starts once it is still (settle window).
    SETTLING = "settling"
    IGNORED = "ignored"
    REJECTED = "rejected"
    # The poller could not read a base (credentials refused, not found, unreachable): recorded when
    # the error first appears or changes, so "why didn't it rebuild?" has an answer here too.
    REGISTRY_ERROR = "registry-error"
    NOTIFICATION_FAILED = "notification-failed"  # the endpoint never took it, after every retry
    # `base quarantine --rollback` (shared.service_layer.rollback): a tag moved back to its earlier
    # image, or why not (no earlier image, moved since, there already, the registry refused).
    ROLLED_BACK = "rolled-back"
    NOT_ROLLED_BACK = "not-rolled-back"


class EventSource(StrEnum):
    """Where an event came from."""

    EVENTGRID = "eventgrid"
    DISTRIBUTION = "distribution"
    WAVE = "wave"  # the service's own decisions about a wave (its circuit breaker)
    REBUILD = "rebuild"  # `basetrigger base rebuild`: asked for by a person
    MANUAL = "manual"  # a manual task run (recorded when refused: a quarantined base)
    POLL = "poll"  # the poller saw a base's digest change
    HARBOR = "harbor"
    DOCKERHUB = "dockerhub"
    GITHUB = "github"
    TIMER = "timer"  # a task timer's slot (shared.service_layer.timers)
    GITLAB = "gitlab"
    AZURE_REPOS = "azure-repos"
    GIT_POLL = "git-poll"  # a polled repository's branch moved (BASETRIGGER_GIT_POLL)
    NOTIFICATION = "notification"  # a run's notification to its task's endpoint (--update-trigger-endpoint)
    ROLLBACK = "rollback"  # `base quarantine --rollback`: tags moved back (shared.service_layer.rollback)


class Watch(StrEnum):
    """How changes of a registry's images reach basetrigger (per registry, BASETRIGGER_WATCH)."""

    EVENTS = "events"  # the registry notifies (Event Grid, a webhook): no polling
    POLL = "poll"  # the registry sends nothing: the poller checks its bases every interval
    BOTH = "both"  # notified, and polled as well in case a notification is lost


def names(enum: type[StrEnum]) -> list[str]:
    """The values of an enum, in definition order (for `enum` lists, help texts and errors)."""
    return [member.value for member in enum]


def status_words() -> dict[str, list[str]]:
    """The status words the dashboard shows (served to it as `dashboard/vocabulary.json`), so that
    the page keeps no copy of its own: run statuses with the terminal ones first (the order of a
    wave's progress bar), which of them are terminal, the member standing `Waiting`, wave states."""
    ended = [s.value for s in RunStatus if s.terminal]
    going = [s.value for s in RunStatus if not s.terminal]
    return {"runStatuses": ended + going, "terminal": ended, "memberStandings": [WAITING],
            "waveStates": names(WaveState), "triggers": names(Trigger)}


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_time(value: datetime | None) -> str | None:
    """The API's time format: ISO 8601 in UTC with a `Z`."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
