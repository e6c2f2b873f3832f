"""How the CLI shows API answers: JSON as `az` prints it, and `az`-shaped tables.

`runs_table` prints exactly the columns of `az acr task list-runs --output table`. `az` renders its
tables with `tabulate(..., tablefmt="simple", disable_numparse=True)`, which makes each column as wide
as its widest value or its header plus two, whichever is wider, separates columns by two spaces and
puts a dashed rule as wide as each column under the header; this module does the same, so the output
matches the tutorial's table character for character (trailing blanks dropped).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from tabulate import tabulate

from shared.domain.vocabulary import TriggerType

RUN_COLUMNS = ("RUN ID", "TASK", "PLATFORM", "STATUS", "TRIGGER", "STARTED", "DURATION")
TASK_COLUMNS = ("NAME", "PLATFORM", "STATUS", "CONTEXT", "TRIGGERS")


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """An `az`-style table; "" values stay empty, nothing is parsed as a number."""
    rows = [["" if cell is None else str(cell) for cell in row] for row in rows]
    text = tabulate(rows, headers=list(headers), tablefmt="simple", disable_numparse=True)
    return "\n".join(line.rstrip() for line in text.splitlines())


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def format_time(value: str | None) -> str:
    """`2018-09-17T23:07:22.53Z` -> `2018-09-17T23:07:22Z` (UTC, whole seconds); "" when unset."""
    moment = parse_time(value)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else ""


def format_duration(seconds: float | None) -> str:
    """38.4 -> `00:00:38`; hours are not wrapped at 24; "" when unknown."""
    if seconds is None:
        return ""
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}"


def _platform(value: str | None) -> str:
    value = value or "linux"
    return value[:1].upper() + value[1:]


def run_row(run: Mapping[str, Any]) -> list[str]:
    started = run.get("started_at")
    duration = run.get("duration_seconds") if started else None
    if duration is None and started and run.get("finished_at"):
        begin, end = parse_time(started), parse_time(run["finished_at"])
        duration = (end - begin).total_seconds() if begin and end else None
    return [
        run.get("run_id") or "",
        run.get("task") or "",  # quick builds have no task: the column stays empty, as in az
        _platform(run.get("platform")),
        run.get("status") or "",
        run.get("trigger") or "",
        format_time(started),
        format_duration(duration),
    ]


def runs_table(runs: Iterable[Mapping[str, Any]]) -> str:
    return table(RUN_COLUMNS, (run_row(run) for run in runs))


def task_row(task: Mapping[str, Any]) -> list[str]:
    trigger = task.get("base_image_trigger") or {}
    trigger_type = trigger.get("type", TriggerType.RUNTIME)
    triggers = f"BASE_IMAGE ({trigger_type})" if trigger.get("enabled", True) else ""
    context = task.get("context") or ""
    if task.get("branch"):
        context = f"{context}#{task['branch']}"
    return [task.get("name") or "", _platform(task.get("platform")), "Enabled", context, triggers]


def tasks_table(tasks: Iterable[Mapping[str, Any]]) -> str:
    return table(TASK_COLUMNS, (task_row(task) for task in tasks))
