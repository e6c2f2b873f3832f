"""The timer function's work: start the runs of task timers whose slot has come.

Every tick reads the tasks, and for each enabled timer the last slot started (TimerSlots). The
latest slot since then (or since the timer was added) gets one run; slots missed meanwhile (a host
that was down) are covered by that run, and its decision says how many. A slot is an event
(`timer:<task>:<timer>:<time>`) decided once in the decision log: a restart, a tick that overlaps
another instance's, or a crash between starting the run and recording the slot starts nothing twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from shared.domain.decisions import Decision, EventBusy
from shared.domain.tasks import Task
from shared.domain.timers import TaskTimer, latest_slot, slot_event_id
from shared.domain.vocabulary import EventSource, Trigger, format_time, utc_now
from shared.service_layer.ports import TaskRepository, TimerSlots
from shared.service_layer.triggered import TriggeredRuns

log = logging.getLogger(__name__)


@dataclass
class TickReport:
    decisions: list[Decision] = field(default_factory=list)
    busy: int = 0  # slots another instance was deciding: seen again at the next tick
    failed: int = 0  # storage trouble: tried again at the next tick


class TimerService:
    def __init__(self, tasks: TaskRepository, slots: TimerSlots, triggered: TriggeredRuns):
        self.tasks = tasks
        self.slots = slots
        self.triggered = triggered

    def tick(self, now: datetime | None = None) -> TickReport:
        now = now or utc_now()
        report = TickReport()
        for task in self.tasks.all():
            for timer in task.timers:
                if not timer.enabled:
                    continue
                try:
                    decision = self._tick_one(task, timer, now)
                except EventBusy:
                    report.busy += 1
                    continue
                except Exception:
                    log.exception("timer %s of task %s could not start its slot", timer.name, task.name)
                    report.failed += 1
                    continue
                if decision is not None:
                    report.decisions.append(decision)
        return report

    def _tick_one(self, task: Task, timer: TaskTimer, now: datetime) -> Decision | None:
        last = self.slots.last(task.name, timer.name)
        after = max(last, timer.since) if last else timer.since
        slot, count = latest_slot(timer.schedule, after, now)
        if slot is None:
            return None
        reason = f"timer {timer.name} ({timer.schedule}) slot {format_time(slot)}"
        if count > 1:
            reason += f"; covers {count - 1} earlier slot(s) missed while no timer ran"
        decision = self.triggered.start(slot_event_id(task.name, timer.name, slot), EventSource.TIMER,
                                        task, Trigger.TIMER, reason)
        self.slots.advance(task.name, timer.name, slot)  # after the run: a crash before retries the slot
        return decision
