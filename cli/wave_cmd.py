"""`basetrigger wave list|show|cancel|resume`: what one base change rebuilt, in order, and its brakes.

A wave is everything one base change started, cascades included: each task at most once, each after
the tasks it is built FROM, within the caps on builds running at once. When its first builds fail
(a broken base), its circuit breaker holds the rest: `wave resume` goes on, `wave cancel` stops.
"""

from __future__ import annotations

import argparse
from typing import Any

from cli.client import EXIT_OK, Client, connection_options, handles_errors
from cli.output import format_time, table, to_json

WAVE_COLUMNS = ("WAVE", "STATE", "CREATED", "ROOT", "LEVELS", "RUNS")
MEMBER_COLUMNS = ("LEVEL", "TASK", "RUN", "STATUS", "WAITS FOR")
EPILOG = """\
examples:
  basetrigger wave list --output table
  basetrigger wave show w3
  basetrigger wave resume w3      # after fixing what tripped its circuit breaker
  basetrigger base rebuild localhost:5000/baseimages/node:9-alpine
"""


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))


def waves_table(waves: list[dict[str, Any]]) -> str:
    return table(WAVE_COLUMNS, ([w["wave_id"], w["state"], format_time(w.get("created_at")), w["root"],
                                 w.get("levels", ""), _counts(w.get("counts") or {})] for w in waves))


def wave_text(wave: dict[str, Any]) -> str:
    head = (f"wave {wave['wave_id']}: {wave['state']}, {wave['root']}, {wave.get('levels')} level(s); "
            f"{_counts(wave.get('counts') or {})}")
    if wave.get("base_change"):
        head += f"\nbase change: {wave['base_change']}"
    if wave.get("reason"):
        head += f"\n{wave['reason']}"
    members = table(MEMBER_COLUMNS, ([m["level"], m["task"], m["run_id"],
                                      m.get("outcome") or ("Released" if m.get("released") else "Waiting"),
                                      ", ".join(m.get("waits_for") or [])] for m in wave.get("members", [])))
    return f"{head}\n\n{members}"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = subparsers.add_parser(
        "wave", help="waves: everything one base change rebuilt, in order, once",
        description=__doc__.split("\n\n", 1)[1], epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = group.add_subparsers(title="commands", metavar="<command>", required=True)
    listing = commands.add_parser("list", parents=[connection_options()], help="waves, newest first")
    listing.add_argument("--top", type=int, default=15, help="how many at most (default: 15)")
    listing.add_argument("--output", "-o", choices=("table", "json"), default="json",
                         help="output format (default: json, as az prints)")
    listing.set_defaults(func=wave_list)
    for name, what in (("show", "a wave and its runs, level by level"),
                       ("cancel", "cancel what of the wave has not run"),
                       ("resume", "let a wave its circuit breaker held go on")):
        command = commands.add_parser(name, parents=[connection_options()], help=what, description=what)
        command.add_argument("wave_id", metavar="WAVE", help="the wave's id, e.g. w3")
        command.add_argument("--output", "-o", choices=("table", "json"), default="table")
        command.set_defaults(func=wave_command, action=name)


@handles_errors
def wave_list(args: argparse.Namespace) -> int:
    waves = Client.from_args(args).waves(top=args.top)
    print(waves_table(waves) if args.output == "table" else to_json(waves))
    return EXIT_OK


@handles_errors
def wave_command(args: argparse.Namespace) -> int:
    wave = Client.from_args(args).wave(args.wave_id, None if args.action == "show" else args.action)
    print(wave_text(wave) if args.output == "table" else to_json(wave))
    return EXIT_OK
