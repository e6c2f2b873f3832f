"""`basetrigger dockerfile ...`: Dockerfile commands that work offline, without the API.

`basetrigger dockerfile deps FILE` prints the stages of a Dockerfile and the base images a task
built from it would be triggered by, computed exactly as the service computes them
(`shared.domain.dockerfile.parse_dependencies`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from tabulate import tabulate

from shared.domain.dockerfile import DEFAULT_PLATFORM, DockerfileDeps, DockerfileError, parse_dependencies

EXIT_OK = 0
EXIT_ERROR = 2

DEPS_EPILOG = """\
The base images are normalized the way Docker normalizes them (node -> docker.io/library/node:latest).
"runtime" lists the images of the final stage's chain (the base-image trigger type Runtime),
"all" the images of every stage (trigger type All); scratch and references to earlier stages
are not images and are not listed.

examples:
  basetrigger dockerfile deps Dockerfile
  basetrigger dockerfile deps app/Dockerfile --build-arg NODE_VERSION=20 --output table
  cat Dockerfile | basetrigger dockerfile deps -
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = subparsers.add_parser(
        "dockerfile",
        help="inspect Dockerfiles (offline)",
        description="Inspect Dockerfiles locally, without calling the basetrigger API.",
    )
    commands = group.add_subparsers(title="commands", metavar="<command>", required=True)

    deps = commands.add_parser(
        "deps",
        help="list the base images a Dockerfile depends on",
        description="List the stages of a Dockerfile and the base images it is built FROM,\n"
        "after expanding the ARGs declared before the first FROM.",
        epilog=DEPS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    deps.add_argument("file", metavar="FILE", help="the Dockerfile to read ('-' for standard input)")
    deps.add_argument(
        "--build-arg",
        dest="build_args",
        action="append",
        default=[],
        type=_build_arg,
        metavar="KEY[=VALUE]",
        help="a build argument, as for 'docker build' (repeatable); KEY alone takes the value of "
        "the environment variable KEY",
    )
    deps.add_argument(
        "--platform",
        default=DEFAULT_PLATFORM,
        help="build and target platform that $BUILDPLATFORM, $TARGETARCH, ... describe "
        f"(default: {DEFAULT_PLATFORM})",
    )
    deps.add_argument(
        "--output",
        "-o",
        choices=("json", "table"),
        default="json",
        help="output format (default: json)",
    )
    deps.set_defaults(func=run_deps)


def _build_arg(text: str) -> tuple[str, str | None]:
    key, has_value, value = text.partition("=")
    if not key:
        raise argparse.ArgumentTypeError(f"invalid build argument {text!r}: expected KEY=VALUE")
    return key, value if has_value else None


def run_deps(args: argparse.Namespace) -> int:
    build_args = {}
    for key, value in args.build_args:
        # Like `docker build --build-arg KEY`: the value comes from the environment, and an
        # unset variable leaves the argument out.
        if value is None:
            value = os.environ.get(key)
        if value is not None:
            build_args[key] = value

    name = "<stdin>" if args.file == "-" else args.file
    try:
        if args.file == "-":
            text = sys.stdin.read()
        else:
            with open(args.file, encoding="utf-8") as handle:
                text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        print(f"error: cannot read Dockerfile {name}: {reason}", file=sys.stderr)
        return EXIT_ERROR

    try:
        deps = parse_dependencies(text, build_args, platform=args.platform)
    except DockerfileError as exc:
        where = f"{name}:{exc.line}" if exc.line is not None else name
        print(f"error: {where}: {exc.message}", file=sys.stderr)
        return EXIT_ERROR

    if args.output == "json":
        print(json.dumps(deps.to_dict(), indent=2))
    else:
        print(format_table(deps))
    return EXIT_OK


def format_table(deps: DockerfileDeps) -> str:
    rows = [[stage.index, stage.base, stage.alias, stage.platform] for stage in deps.stages]
    table = tabulate(rows, headers=["STAGE", "BASE", "ALIAS", "PLATFORM"], tablefmt="simple", missingval="")
    return (
        f"{table}\n\n"
        f"runtime: {', '.join(deps.runtime) or '(none)'}\n"
        f"all: {', '.join(deps.all) or '(none)'}"
    )
