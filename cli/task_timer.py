"""`basetrigger task timer add|list|update|remove` (registered by cli/task_cmd.py under `task`).

Like `az acr task timer`: named cron schedules (UTC) per task; each slot starts one run whose
trigger is `Timer`. `task create|update --schedule` sets the task's default timer `t1`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from cli.client import EXIT_OK, Client, handles_errors
from cli.output import table, to_json

COLUMNS = ("NAME", "SCHEDULE", "ENABLED")
EPILOG = """\
examples:
  basetrigger task timer add --name app --timer-name nightly --schedule "0 21 * * *"
  basetrigger task timer list --name app
  basetrigger task timer update --name app --timer-name nightly --schedule "30 5 * * 1-5"
  basetrigger task timer update --name app --timer-name nightly --enabled false
  basetrigger task timer remove --name app --timer-name nightly

Schedules are cron in UTC: minute hour day-of-month month day-of-week.
"""


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "yes", "1", "on", "enabled"):
        return True
    if value in ("false", "no", "0", "off", "disabled"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def timers_table(timers: list[dict[str, Any]]) -> str:
    return table(COLUMNS, ([t["name"], t["schedule"], "yes" if t.get("enabled") else "no"] for t in timers))


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser],
             conn: argparse.ArgumentParser) -> None:
    group = commands.add_parser(
        "timer", help="a task's timer triggers (az acr task timer)",
        description="Named cron schedules (UTC) that run a task.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = group.add_subparsers(title="commands", metavar="<command>", required=True)

    def add(name: str, help_text: str, func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, help=help_text, description=help_text[:1].upper() + help_text[1:] + ".",
                                parents=[conn])
        parser.add_argument("--name", "-n", required=True, help="the task")
        parser.add_argument("--output", "-o", choices=("table", "json"), default="table")
        parser.set_defaults(func=func)
        return parser

    adding = add("add", "add a timer to a task", timer_add)
    adding.add_argument("--timer-name", required=True, help="the timer's name")
    adding.add_argument("--schedule", required=True, help="cron in UTC, e.g. '0 21 * * *'")
    adding.add_argument("--enabled", type=_bool, default=True, metavar="{true,false}")
    updating = add("update", "change a task's timer", timer_update)
    updating.add_argument("--timer-name", required=True, help="the timer's name")
    updating.add_argument("--schedule", help="cron in UTC, e.g. '0 21 * * *'")
    updating.add_argument("--enabled", type=_bool, default=None, metavar="{true,false}")
    add("list", "list a task's timers", timer_list)
    removing = add("remove", "remove a timer from a task", timer_remove)
    removing.add_argument("--timer-name", required=True, help="the timer's name")


def _path(args: argparse.Namespace, timer: str | None = None) -> str:
    return f"tasks/{args.name}/timers" + (f"/{timer}" if timer else "")


def _show(args: argparse.Namespace, timers: list[dict[str, Any]]) -> int:
    print(to_json(timers) if args.output == "json" else timers_table(timers))
    return EXIT_OK


@handles_errors
def timer_add(args: argparse.Namespace) -> int:
    body = {"name": args.timer_name, "schedule": args.schedule, "enabled": args.enabled}
    task = Client.from_args(args).request("POST", _path(args), body=body).json()
    return _show(args, task["timers"])


@handles_errors
def timer_update(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {}
    if args.schedule is not None:
        body["schedule"] = args.schedule
    if args.enabled is not None:
        body["enabled"] = args.enabled
    task = Client.from_args(args).request("PATCH", _path(args, args.timer_name), body=body).json()
    return _show(args, task["timers"])


@handles_errors
def timer_list(args: argparse.Namespace) -> int:
    return _show(args, Client.from_args(args).request("GET", _path(args)).json()["timers"])


@handles_errors
def timer_remove(args: argparse.Namespace) -> int:
    task = Client.from_args(args).request("DELETE", _path(args, args.timer_name)).json()
    return _show(args, task["timers"])
