"""Timer triggers: NCRONTAB schedules (six fields, seconds first), evaluated in UTC as in Azure.

Like the host, a timer function never overlaps itself: the next occurrence is computed from the
time the previous invocation finished, and occurrences missed meanwhile are skipped. `runOnStartup`
fires once when the host starts; `useMonitor` is ignored (there is no schedule-status store), so
`past_due` is true only when an invocation starts more than a second after its occurrence.
A TimeSpan schedule (`00:05:00`, allowed on App Service plans) fires at that interval.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from azure.functions.timer import TimerRequest
from croniter import croniter

from .hostconfig import HostConfigError, parse_timespan
from .invocation import Invoker
from .loader import FunctionEntry

log = logging.getLogger("devhost.timers")

PAST_DUE_AFTER = timedelta(seconds=1)


class ScheduleError(ValueError):
    pass


class Schedule:
    def __init__(self, expression: str) -> None:
        self.expression = expression
        self._interval: timedelta | None = None
        fields = expression.split()
        if len(fields) == 1 and ":" in expression:
            try:
                self._interval = timedelta(seconds=parse_timespan(expression, "schedule"))
            except HostConfigError as exc:
                raise ScheduleError(str(exc)) from exc
            if self._interval <= timedelta(0):
                raise ScheduleError(f"schedule {expression!r}: the interval must be positive")
            return
        # Six fields is NCRONTAB with seconds first; five is plain cron, which NCRONTAB also reads.
        self._seconds_first = len(fields) == 6
        if len(fields) not in (5, 6) or not croniter.is_valid(
            expression, second_at_beginning=self._seconds_first
        ):
            raise ScheduleError(f"schedule {expression!r} is not a valid NCRONTAB expression")

    def next_after(self, moment: datetime) -> datetime:
        if self._interval is not None:
            return moment + self._interval
        following: datetime = croniter(self.expression, moment,
                                       second_at_beginning=self._seconds_first).get_next(datetime)
        return following


class TimerRunner:
    def __init__(self, entry: FunctionEntry, schedule: Schedule, invoker: Invoker) -> None:
        self.entry = entry
        self.schedule = schedule
        self._invoker = invoker
        self._stopping = asyncio.Event()
        self._last: datetime | None = None

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        if self.entry.trigger.get("runOnStartup"):
            await self._fire(
                scheduled=datetime.now(UTC), next_due=self.schedule.next_after(datetime.now(UTC))
            )
        while not self._stopping.is_set():
            # From the later of now and the last occurrence: a wake-up a few ms early must not
            # compute the occurrence that just fired again.
            now = datetime.now(UTC)
            due = self.schedule.next_after(max(now, self._last) if self._last else now)
            try:
                await asyncio.wait_for(self._stopping.wait(), (due - datetime.now(UTC)).total_seconds())
                return
            except TimeoutError:
                pass
            await self._fire(scheduled=due, next_due=self.schedule.next_after(due))

    async def _fire(self, scheduled: datetime, next_due: datetime) -> None:
        now = datetime.now(UTC)
        request = TimerRequest(
            past_due=now - scheduled > PAST_DUE_AFTER,
            schedule_status={
                "Last": (self._last or scheduled).isoformat(),
                "Next": next_due.isoformat(),
                "LastUpdated": now.isoformat(),
            },
            schedule={"AdjustForDST": True},
        )
        self._last = scheduled
        await self._invoker.invoke(self.entry, request, reason=f"Timer fired at {now.isoformat()}")
