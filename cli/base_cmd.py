"""`basetrigger base impact IMAGE`: every task that would rebuild, transitively, if IMAGE changed."""

from __future__ import annotations

import argparse

from cli.client import EXIT_OK, ApiError, Client, connection_options, handles_errors
from cli.graph_output import impact_dot, impact_mermaid, impact_tree
from cli.output import to_json
from shared.domain.image_ref import ImageRef, InvalidReference

EPILOG = """\
IMAGE is read as a Dockerfile's FROM reads it: `node:20` is docker.io/library/node:20, a name
without a tag means :latest, and an image of your registry needs its host
(localhost:5000/baseimages/node:9-alpine).

examples:
  basetrigger base impact localhost:5000/baseimages/node:9-alpine
  basetrigger base impact localhost:5000/baseimages/node:9-alpine --output dot | dot -Tsvg > impact.svg
  basetrigger base impact node:20 --output mermaid
"""

FORMATS = {"tree": impact_tree, "json": to_json, "dot": impact_dot, "mermaid": impact_mermaid}


def register(subparsers: argparse._SubParsersAction) -> None:
    group = subparsers.add_parser(
        "base", help="base images: what depends on them",
        description="Questions about base images.")
    commands = group.add_subparsers(title="commands", metavar="<command>", required=True)
    impact = commands.add_parser(
        "impact", parents=[connection_options()], epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="every task that would rebuild, level by level, if IMAGE changed",
        description="Every task that would rebuild, transitively, if IMAGE changed: the tasks built "
        "FROM it, then those built FROM their output images, and so on, by level (a task's level is "
        "the wave it would rebuild in). Build-stage dependencies and tasks whose trigger is off are "
        "marked; they would not rebuild, so nothing below them is followed.")
    impact.add_argument("image", metavar="IMAGE",
                        help="the base image, e.g. localhost:5000/baseimages/node:9-alpine")
    impact.add_argument("--output", "-o", choices=tuple(FORMATS), default="tree",
                        help="tree (default), json, dot (Graphviz) or mermaid")
    impact.set_defaults(func=base_impact)

    listing = commands.add_parser(
        "list", parents=[connection_options()], help="every base in use: how it is watched, what was seen",
        description="Every distinct base image the tasks are built FROM: its digest as last seen, whether "
        "its registry's events or the poller watch it, when it was last checked, the tasks that use it "
        "and the last error (a refused password, an unreachable registry).")
    listing.add_argument("--output", "-o", choices=("table", "json"), default="table")
    listing.set_defaults(func=base_list)

    rebuild = commands.add_parser(
        "rebuild", parents=[connection_options()],
        help="rebuild everything built FROM IMAGE, as a change would",
        description="Start a wave of every task built FROM IMAGE, transitively, level by level, whatever "
        "digests they last built on (Renovate's \"rebuild all that depend on X\"). `basetrigger wave show` "
        "follows it.")
    rebuild.add_argument("image", metavar="IMAGE[@DIGEST]", help="the base image, e.g. node:20 or "
                         "localhost:5000/baseimages/node:9-alpine@sha256:…")
    rebuild.add_argument("--output", "-o", choices=("table", "json"), default="table")
    rebuild.set_defaults(func=base_rebuild)


BASE_COLUMNS = ("BASE", "DIGEST", "WATCHED BY", "LAST CHECKED", "TASKS", "LAST ERROR")


def bases_table(answer: dict) -> str:
    from cli.decision_cmd import short_digest
    from cli.output import format_time, table

    def watched(b: dict) -> str:
        return {"events": "events", "poll": "polling", "both": "events+polling"}.get(b["watch"], b["watch"])

    return table(BASE_COLUMNS, ([b["base"], short_digest(b.get("digest")), watched(b),
                                 format_time(b.get("last_checked")) if b.get("polled") else "-",
                                 ", ".join(b.get("tasks") or []), b.get("last_error") or ""]
                                for b in answer.get("bases", [])))


@handles_errors
def base_list(args: argparse.Namespace) -> int:
    answer = Client.from_args(args).request("GET", "bases").json()
    print(to_json(answer) if args.output == "json" else bases_table(answer))
    return EXIT_OK


@handles_errors
def base_impact(args: argparse.Namespace) -> int:
    try:
        image = str(ImageRef.parse(args.image))
    except InvalidReference as exc:
        raise ApiError(str(exc)) from None
    print(FORMATS[args.output](Client.from_args(args).base_impact(image)))
    return EXIT_OK


@handles_errors
def base_rebuild(args: argparse.Namespace) -> int:
    try:
        ImageRef.parse(args.image)
    except InvalidReference as exc:
        raise ApiError(str(exc)) from None
    decision = Client.from_args(args).rebuild_base(args.image)
    if args.output == "json":
        print(to_json(decision))
    else:
        print(f"{decision['outcome']}: {decision['reason']}")
        if decision.get("runs"):
            print("runs: " + ", ".join(decision["runs"]))
    return EXIT_OK
