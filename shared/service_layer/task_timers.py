"""`task timer add|list|update|remove`: a task's named timers, changed without re-reading its
Dockerfile (a schedule changes nothing of what the task is built FROM).

Each change reads the task and writes it back only if it is still the version read (the storage's
etag), reading again when another change got there first: a timer added while someone updates the
task is neither lost nor does it undo their change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from shared.domain.tasks import Task, TaskChanged, TaskError
from shared.domain.timers import DEFAULT_TIMER, TaskTimer
from shared.domain.vocabulary import utc_now
from shared.service_layer.ports import TaskRepository

ATTEMPTS = 5


class TimerNotFound(LookupError):
    pass


class TaskTimers:
    def __init__(self, store: TaskRepository):
        self.store = store

    def of(self, task: str) -> list[TaskTimer]:
        return self.store.get(task).timers

    def add(self, task: str, name: str, schedule: str, enabled: bool = True) -> Task:
        def add(timers: list[TaskTimer]) -> list[TaskTimer]:
            if any(t.name.lower() == name.lower() for t in timers):
                raise TaskError(f"the task already has a timer named {name!r}")
            return [*timers, TaskTimer(name=name, schedule=schedule, enabled=enabled)]

        return self._change(task, add)

    def update(self, task: str, name: str, schedule: str | None = None, enabled: bool | None = None) -> Task:
        def update(timers: list[TaskTimer]) -> list[TaskTimer]:
            found = _find(timers, task, name)
            changed = replace(found, schedule=schedule if schedule is not None else found.schedule,
                              enabled=enabled if enabled is not None else found.enabled)
            if changed.schedule != found.schedule or (changed.enabled and not found.enabled):
                changed.since = utc_now()  # a new schedule starts now: no run for a past slot of it
            return [changed if t is found else t for t in timers]

        return self._change(task, update)

    def set_schedule(self, task: str, schedule: str) -> Task:
        """`--schedule` on `task create`/`update`: the default timer (t1), added or rescheduled."""
        def set_schedule(timers: list[TaskTimer]) -> list[TaskTimer]:
            if any(t.name.lower() == DEFAULT_TIMER for t in timers):
                return update(timers)
            return [*timers, TaskTimer(name=DEFAULT_TIMER, schedule=schedule)]

        def update(timers: list[TaskTimer]) -> list[TaskTimer]:
            found = _find(timers, task, DEFAULT_TIMER)
            if found.schedule == " ".join(schedule.split()):
                return timers
            changed = replace(found, schedule=schedule, since=utc_now())
            return [changed if t is found else t for t in timers]

        return self._change(task, set_schedule)

    def remove(self, task: str, name: str) -> Task:
        def remove(timers: list[TaskTimer]) -> list[TaskTimer]:
            found = _find(timers, task, name)
            return [t for t in timers if t is not found]

        return self._change(task, remove)

    def _change(self, name: str, change: Callable[[list[TaskTimer]], list[TaskTimer]]) -> Task:
        for _ in range(ATTEMPTS):
            task = self.store.get(name)
            task.timers = change(list(task.timers))
            task.updated_at = utc_now()
            task.validate()
            try:
                task.etag = self.store.save(task, etag=task.etag)
                return task
            except TaskChanged:
                continue
        raise TaskChanged(f"task {name!r} kept changing; try again")


def _find(timers: list[TaskTimer], task: str, name: str) -> TaskTimer:
    for timer in timers:
        if timer.name.lower() == name.lower():
            return timer
    raise TimerNotFound(f"task {task!r} has no timer named {name!r}")
