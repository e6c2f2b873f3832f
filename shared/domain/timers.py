"""Task timers (`az acr task timer add|list|update|remove`, `--schedule`): cron schedules in UTC.

A schedule is ACR's five-field cron (`0 21 * * *`), or, for short test schedules, the Functions
host's six-field NCRONTAB with seconds first (`*/10 * * * * *`). Each timer has slots (the times
its schedule names); the timer function starts one run for the latest slot that came since the
last slot started (shared.service_layer.timers). Slots missed while nothing ran (a host down) are
not each run: one run covers them, as one base-image run covers several pushes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from croniter import croniter

from shared.domain.vocabulary import format_time, utc_now

TIMER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,49}")
MAX_TIMERS = 10
# The timer `--schedule` on `task create`/`update` names (ACR's default timer name).
DEFAULT_TIMER = "t1"


class TimerError(ValueError):
    """A timer's name or schedule is not usable."""


def check_schedule(expression: str) -> str:
    """The schedule, normalised (single spaces); TimerError if it is not cron or NCRONTAB."""
    if not isinstance(expression, str):
        raise TimerError("a schedule must be a string such as '0 21 * * *'")
    fields = expression.split()
    if len(fields) not in (5, 6) or not croniter.is_valid(" ".join(fields),
                                                          second_at_beginning=len(fields) == 6):
        raise TimerError(f"schedule {expression[:80]!r} is not a cron expression (five fields, UTC: "
                         "minute hour day month weekday, e.g. '0 21 * * *')")
    return " ".join(fields)


def latest_slot(expression: str, after: datetime, now: datetime) -> tuple[datetime | None, int]:
    """The latest slot of the schedule in (after, now], and how many slots fell in that span
    (capped at 1000: only "several" matters). (None, 0) when none did."""
    fields = expression.split()
    seconds_first = len(fields) == 6
    cursor = croniter(expression, after.astimezone(UTC), second_at_beginning=seconds_first)
    latest: datetime | None = None
    count = 0
    while count < 1000:
        slot = cursor.get_next(datetime)
        if slot > now:
            break
        latest, count = slot, count + 1
    if count == 1000:  # a long outage of a frequent timer: jump to the slot just before now
        back = croniter(expression, now.astimezone(UTC), second_at_beginning=seconds_first)
        latest = back.get_prev(datetime)
    return latest, count


@dataclass
class TaskTimer:
    name: str
    schedule: str
    enabled: bool = True
    # Slots before this never run: a timer added at 20:59 runs at 21:00, not for last night's slot.
    since: datetime = field(default_factory=utc_now)

    def validate(self) -> None:
        if not isinstance(self.name, str) or not TIMER_NAME.fullmatch(self.name):
            raise TimerError(f"invalid timer name {str(self.name)[:60]!r}: use letters, digits, '-' and "
                             "'_' (at most 50)")
        self.schedule = check_schedule(self.schedule)
        if not isinstance(self.enabled, bool):
            raise TimerError("a timer's enabled must be true or false")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "schedule": self.schedule, "enabled": self.enabled,
                "since": format_time(self.since)}

    def stored_dict(self) -> dict[str, Any]:
        return {"name": self.name, "schedule": self.schedule, "enabled": self.enabled,
                "since": self.since.isoformat()}

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> TaskTimer:
        return cls(name=data["name"], schedule=data["schedule"], enabled=bool(data.get("enabled", True)),
                   since=datetime.fromisoformat(data["since"]))


def check_timers(timers: list[TaskTimer]) -> None:
    if len(timers) > MAX_TIMERS:
        raise TimerError(f"a task has at most {MAX_TIMERS} timers")
    seen: set[str] = set()
    for timer in timers:
        timer.validate()
        if timer.name.lower() in seen:
            raise TimerError(f"the task has two timers named {timer.name!r}")
        seen.add(timer.name.lower())


def slot_event_id(task: str, timer: str, slot: datetime) -> str:
    """The decision log's id of one slot: a slot is decided (and run) once, whoever sees it."""
    return f"timer:{task}:{timer}:{format_time(slot)}"
