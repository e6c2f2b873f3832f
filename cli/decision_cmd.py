"""`basetrigger decision list`: what basetrigger decided about each registry event, and why.

The decision log is the answer to "why did (or didn't) it rebuild?". Per task, `basetrigger task why`
shows the same decisions from that task's side; `basetrigger task stale` the tasks left behind.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from cli.client import EXIT_OK, ApiError, Client, connection_options, handles_errors
from cli.output import format_time, table, to_json
from shared.domain.image_ref import ImageRef, InvalidReference

DECISION_COLUMNS = ("TIME", "IMAGE", "DIGEST", "OUTCOME", "RUNS", "REASON")


def short_digest(digest: str | None) -> str:
    """`sha256:0123456789abcdef…` -> `0123456789ab` (enough to tell digests apart in a table)."""
    if not digest:
        return ""
    return digest.split(":", 1)[-1][:12]


def decisions_table(decisions: list[dict[str, Any]]) -> str:
    return table(DECISION_COLUMNS, ([format_time(d.get("time")), d.get("image") or "",
                                     short_digest(d.get("digest")), d.get("outcome") or "",
                                     ",".join(d.get("runs") or []), (d.get("reason") or "")
                                     + (f" [base change: {d['change']}]" if d.get("change") else "")]
                                    for d in decisions))


def top_value(high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if not 1 <= value <= high:
            raise argparse.ArgumentTypeError(f"expected a number from 1 to {high}, not {text!r}")
        return value

    return parse


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = subparsers.add_parser(
        "decision", help="the decision log: why did (or didn't) a push rebuild anything?",
        description="The decision log: one decision per registry event, with a reason.")
    commands = group.add_subparsers(title="commands", metavar="<command>", required=True)
    listing = commands.add_parser(
        "list", parents=[connection_options()], help="recent decisions, newest first",
        description="Recent decisions, newest first: the pushed image and digest, the outcome "
        "(queued, digest-unchanged, trigger-disabled, coalesced, own-output, …), the runs queued and "
        "the reason. For one task's side of them: basetrigger task why --name TASK.")
    listing.add_argument("--image", help="only decisions about this pushed image, named as a FROM line "
                         "names it (e.g. localhost:5000/baseimages/node:9-alpine)")
    listing.add_argument("--top", type=top_value(500), default=20, help="how many at most (default: 20)")
    listing.add_argument("--output", "-o", choices=("table", "json"), default="table",
                         help="output format (default: table)")
    listing.set_defaults(func=decision_list)


@handles_errors
def decision_list(args: argparse.Namespace) -> int:
    image = None
    if args.image:
        try:
            image = str(ImageRef.parse(args.image))
        except InvalidReference as exc:
            raise ApiError(str(exc)) from None
    decisions = Client.from_args(args).decisions(top=args.top, image=image)
    print(decisions_table(decisions) if args.output == "table" else to_json(decisions))
    return EXIT_OK
