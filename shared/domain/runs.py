"""Runs: the record of one build, its short id (`da1`, `da2`, …) and its stored form."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from shared.domain.builds import BuildSpec
from shared.domain.platforms import DEFAULT_OS
from shared.domain.vocabulary import RunStatus, Trigger, format_time, utc_now

# 1: one table property per field; 2: the run is one JSON record (what `to_record` returns);
# 3: the same record, its rows spread over bucket partitions (shared.adapters.run_table).
SCHEMA_VERSION = 3
_COUNTER_SPAN = 10**12  # counters stay below this; inverted keys are fixed-width
_TIMES = ("created_at", "started_at", "finished_at", "heartbeat_at", "unsent_since", "built_at", "pushed_at")


class RunNotFound(LookupError):
    pass


class RunConflict(RuntimeError):
    """The run changed since it was read (another worker or a cancel got there first)."""


class RunNotCancelable(ValueError):
    pass


@dataclass
class Run:
    run_id: str
    status: RunStatus
    trigger: Trigger
    task: str | None = None
    # The platform the run builds (its task's: `linux`, `linux/arm64`), as `az acr task list-runs`
    # shows it. Rows stored before it was kept say "Linux".
    platform: str = DEFAULT_OS
    cause: str | None = None
    event_id: str | None = None
    created_at: datetime = field(default_factory=utc_now)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    heartbeat_at: datetime | None = None
    output_images: list[str] = field(default_factory=list)
    output_digest: str | None = None
    base_digests: dict[str, str] = field(default_factory=dict)
    reason: str | None = None
    attempt: int = 0
    # Quick builds have no task: what to build is kept here (never secret values).
    spec: BuildSpec | None = None
    force: bool = False
    # The wave the run belongs to, and whether it may start: a wave's runs wait, Queued and without
    # a queue message, until their bases are built and there is room (shared.service_layer.waves).
    wave_id: str | None = None
    released: bool = True
    # The builder's own id of the build an attempt started (an ACR run id), saved as soon as the
    # builder has one: the attempt that takes the run over follows that build instead of starting a
    # second one that would push too. Rows stored before this field read it as None.
    builder_run_id: str | None = None
    # Since when the run has been released without its queue message being sent (None: sent, or not
    # released). Set with the release, cleared once the send succeeded: a send that failed (storage
    # down) is finished by the push's redelivery or by housekeeping, and a sent one is never resent.
    unsent_since: datetime | None = None
    # What a source trigger (Commit, Pull Request) started the run on: the commit is built, and
    # image templates may name both ({{.Run.Commit}}, {{.Run.Branch}}). None for other runs.
    commit: str | None = None
    branch: str | None = None
    # The layer digests of each base the image was built on (the manifest of the run's platform):
    # what a later rebase checks the image's bottom layers against. Rows stored before read it as {}.
    base_layers: dict[str, list[str]] = field(default_factory=dict)
    # What made the image (shared.domain.vocabulary.BuilderKind), and, for a run a base update
    # triggered, the update policy's decision (`rebased: …`, `rebuilt: …`). None in older rows.
    builder: str | None = None
    update_decision: str | None = None
    # What the auto rule found in the Dockerfile the image was built from: its final stage's base,
    # and `adds only files and metadata` (shared.domain.rebase.ADDS_ONLY) or why not (`RUN in
    # final stage`). A rebased image keeps those of the image it was made from. None: not known.
    final_base: str | None = None
    final_stage: str | None = None
    # When the image was built and when it was pushed (a successful run's; built_at only when the
    # builder tells the two apart): with created_at (queued) and started_at, the steps of the patch
    # latency (shared.domain.latency). None in older rows and for runs that pushed nothing.
    built_at: datetime | None = None
    pushed_at: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.status.terminal

    @property
    def duration_seconds(self) -> float | None:
        if not self.started_at:
            return None
        end = self.finished_at or utc_now()
        return max(0.0, (end - self.started_at).total_seconds())

    def to_record(self) -> dict[str, Any]:
        """Every field, JSON-ready (the stored form, schema 2)."""
        # Not dataclasses.asdict: its deep walk was most of the time a 10,000-run backlog took.
        record = {name: _copied(getattr(self, name)) for name in _FIELD_NAMES}
        for key in _TIMES:
            value = getattr(self, key)
            record[key] = value.isoformat() if value else None
        record["status"] = str(self.status)
        record["trigger"] = str(self.trigger)
        record["spec"] = self.spec.to_record() if self.spec else {}
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Run:
        # Fields a newer version added are left out, not refused: during a rolling deploy an
        # instance of the older version still reads the runs the newer one writes.
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in record.items() if key in known}
        for key in _TIMES:
            values[key] = _datetime(values.get(key))
        values["created_at"] = values["created_at"] or utc_now()
        values["status"] = RunStatus(values["status"])
        values["trigger"] = Trigger(values["trigger"])
        values["spec"] = BuildSpec.from_record(values["spec"]) if values.get("spec") else None
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The public shape (API answers); a run never holds secrets."""
        data = self.to_record()
        for key in _TIMES:
            data[key] = format_time(getattr(self, key))
        data["duration_seconds"] = self.duration_seconds
        data.pop("spec", None)
        return data


_FIELD_NAMES = tuple(f.name for f in fields(Run))


def _copied(value: Any) -> Any:
    """A field's value, its lists and dicts copied (a record never shares them with its run)."""
    if isinstance(value, list):
        return [_copied(item) for item in value]
    if isinstance(value, dict):
        return {key: _copied(item) for key, item in value.items()}
    return value


def _datetime(value: Any) -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


class RunIds:
    """`da1`, `da2`, …: a prefix and a counter."""

    def __init__(self, prefix: str):
        self.prefix = prefix

    def format(self, counter: int) -> str:
        return f"{self.prefix}{counter}"

    def counter(self, run_id: str) -> int:
        digits = run_id[len(self.prefix):] if run_id.startswith(self.prefix) else ""
        if not (digits.isascii() and digits.isdigit()) or len(digits) > 12:  # not `²` or `٣`
            raise RunNotFound(f"{run_id!r} is not a run id (expected {self.prefix}<number>)")
        return int(digits)

    def inverted(self, run_id: str) -> str:
        """A fixed-width key that sorts newer runs first."""
        return f"{_COUNTER_SPAN - self.counter(run_id):012d}"
