"""Entry point of the `basetrigger` CLI: one argparse parser, one sub-command group per module.

Command groups live in modules of this package named `*_cmd` (`dockerfile_cmd`, later
`build_cmd`, `task_cmd`, ...). Each exposes `register(subparsers)`, which adds its parser with
`subparsers.add_parser(...)` and sets `func` (a callable taking the parsed arguments and
returning the exit status) as a default. Adding a group is adding a module: this file does not
change.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from collections.abc import Callable
from importlib import metadata

import cli

PROG = "basetrigger"


def _version() -> str:
    try:
        return metadata.version(PROG)
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def command_modules() -> list[str]:
    """Names of the modules that register command groups, in a stable order."""
    return sorted(
        f"{cli.__name__}.{info.name}"
        for info in pkgutil.iter_modules(cli.__path__)
        if info.name.endswith("_cmd")
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Base-image update triggers for container images: rebuild what is built FROM "
        "an image when a new version of that image is pushed.",
        epilog=f"Run '{PROG} <command> --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(title="commands", metavar="<command>", required=True)
    for name in command_modules():
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with `argv` (default: the process arguments); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        # argparse exits on --help, --version and usage errors; report that as a status instead,
        # so main() is callable from tests and other code.
        return exc.code if isinstance(exc.code, int) else 2
    command: Callable[[argparse.Namespace], int] = args.func  # set by each subcommand's parser
    return command(args)


if __name__ == "__main__":
    raise SystemExit(main())
