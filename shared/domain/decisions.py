"""Decisions: what basetrigger did with each event, and why ("why did / didn't it rebuild?")."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from shared.domain.vocabulary import EventSource, Outcome, format_time, utc_now

SCHEMA_VERSION = 2  # 2: rows spread over event, hour and image partitions (1: one partition)
# A delivery that claimed an event and has not decided within this time is presumed dead: another
# delivery takes the event over (dispatch takes well under a second; a 10,000-task fan-out seconds).
DISPATCH_STALE_AFTER = timedelta(seconds=60)


class EventBusy(RuntimeError):
    """Another delivery of the same event is being dispatched right now; deliver again later."""


@dataclass
class TaskDecision:
    task: str
    outcome: Outcome
    reason: str
    run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "outcome": str(self.outcome), "reason": self.reason,
                "run_id": self.run_id}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskDecision:
        return cls(data["task"], Outcome(data["outcome"]), data["reason"], data.get("run_id"))


@dataclass
class Decision:
    event_id: str
    source: EventSource
    outcome: Outcome
    reason: str
    image: str | None = None
    digest: str | None = None
    runs: list[str] = field(default_factory=list)
    tasks: list[TaskDecision] = field(default_factory=list)
    time: datetime = field(default_factory=utc_now)
    # What the pushed digest changed in the base (shared.domain.base_changes), one line that starts
    # with its classification; noted after the decision, by the first worker of the wave it started.
    change: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The public shape (API answers)."""
        return {"event_id": self.event_id, "source": str(self.source), "outcome": str(self.outcome),
                "reason": self.reason, "image": self.image, "digest": self.digest,
                "runs": list(self.runs), "tasks": [t.to_dict() for t in self.tasks],
                "time": format_time(self.time), "change": self.change}
