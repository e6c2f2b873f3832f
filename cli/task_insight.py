"""`basetrigger task why` and `basetrigger task stale` (registered by cli/task_cmd.py under `task`).

    task why --name TASK   the recent decisions about the task's bases, newest first, with its own verdict
    task stale             tasks built on a base digest that is no longer current, since when, and why
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from cli.client import EXIT_OK, Client, handles_errors
from cli.decision_cmd import short_digest, top_value
from cli.output import format_time, table, to_json
from shared.domain.vocabulary import RunStatus

WHY_COLUMNS = ("TIME", "EVENT", "BASE", "DIGEST", "OUTCOME", "RUN", "REASON")
STALE_COLUMNS = ("TASK", "BASE", "STATE", "SINCE", "BUILT ON", "CURRENT", "CAUSE", "REASON")


def why_table(verdicts: list[dict[str, Any]]) -> str:
    def run(v: dict[str, Any]) -> str:
        if not v.get("run_id"):
            return ""
        return f"{v['run_id']} ({v['run_status']})" if v.get("run_status") else v["run_id"]

    def reason(v: dict[str, Any]) -> str:
        text = v.get("reason") or ""
        if v.get("update_decision"):  # rebased or rebuilt, and why
            text += f"; {v['update_decision']}"
        if v.get("run_reason") and v.get("run_status") not in (None, RunStatus.SUCCEEDED):
            text += f"; run: {v['run_reason']}"
        return text + (f" [base change: {v['change']}]" if v.get("change") else "")

    return table(WHY_COLUMNS, ([format_time(v.get("time")), v.get("event_id") or "", v.get("image") or "",
                               short_digest(v.get("digest")), v.get("outcome") or "", run(v), reason(v)]
                              for v in verdicts))


def stale_table(entries: list[dict[str, Any]]) -> str:
    return table(STALE_COLUMNS, ([e["task"], e["base"] + ("" if e.get("runtime", True) else " (build stage)"),
                                 e["state"], format_time(e.get("since")) or "unknown",
                                 short_digest(e.get("built_digest")), short_digest(e.get("current_digest")),
                                 e["cause"], e["reason"]] for e in entries))


def register(add: Callable[[str, str, Callable[[argparse.Namespace], int]], argparse.ArgumentParser]) -> None:
    """`add(name, help, func)` is task_cmd's helper: a sub-command of `task` with --url/--key."""
    why = add("why", "why did (or didn't) a task rebuild: the recent decisions about its bases", task_why)
    why.add_argument("--name", "-n", required=True, help="the task's name")
    why.add_argument("--top", type=top_value(200), default=20, help="how many at most (default: 20)")
    why.add_argument("--output", "-o", choices=("table", "json"), default="table",
                     help="output format (default: table)")
    why.epilog = ("Each line is one registry event about one of the task's bases: its outcome for this task "
                  "(queued, digest-unchanged, trigger-disabled, not-a-runtime-dependency, coalesced, …), the "
                  "run it queued and how that run ended.")

    stale = add("stale", "tasks built on a base digest that is no longer current, and why no rebuild",
                task_stale)
    stale.add_argument("--output", "-o", choices=("table", "json"), default="table",
                       help="output format (default: table)")
    stale.epilog = ("The current digest of each base is asked from its registry now (else the last push "
                    "event recorded). Causes: trigger-disabled, not-a-runtime-dependency, wave-held, "
                    "rebuild-pending, run-failed, no-event (the tag moved without a notification), "
                    "base-unreachable, or what dispatch decided. Exit status 0 either way; an empty list "
                    "prints a line saying so.")


@handles_errors
def task_why(args: argparse.Namespace) -> int:
    verdicts = Client.from_args(args).task_decisions(args.name, top=args.top)
    if args.output == "json":
        print(to_json(verdicts))
    elif not verdicts:
        print(f"no recorded decision concerns {args.name}'s base images")
    else:
        print(why_table(verdicts))
    return EXIT_OK


@handles_errors
def task_stale(args: argparse.Namespace) -> int:
    report = Client.from_args(args).stale()
    entries = report.get("stale", [])
    if args.output == "json":
        print(to_json(report))
        return EXIT_OK
    checked = report.get("checked", {})
    if entries:
        print(stale_table(entries))
    stale = sum(1 for e in entries if e["state"] == "stale")
    print(f"{stale} stale, {len(entries) - stale} unknown, of {checked.get('dependencies', 0)} task "
          f"dependencies ({checked.get('tasks', 0)} tasks, {checked.get('bases', 0)} bases)")
    return EXIT_OK
