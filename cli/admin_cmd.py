"""`basetrigger admin ...`: operating a deployment.

    admin rotate-secrets    re-encrypt every stored secret with the first BASETRIGGER_SECRET_KEY key
    admin migrate           move rows stored by an older schema into today's layout (once, after
                            an upgrade; idempotent)

A key rotation (docs/deploy.md, "Rotating the secret key"): put a new key first in the app's
BASETRIGGER_SECRET_KEY (`<new>,<old>`), restart the app, run `basetrigger admin rotate-secrets`,
and once it reports every secret current, drop the old key.
"""

from __future__ import annotations

import argparse
import sys

from cli.client import EXIT_OK, EXIT_RUN_FAILED, Client, connection_options, handles_errors
from cli.output import to_json

ADMIN_EPILOG = """\
examples:
  basetrigger admin rotate-secrets
  basetrigger admin rotate-secrets --output json
  basetrigger admin migrate

The exit status is 0 when every stored secret is sealed with the first key (the other keys may be
dropped), 1 when some are not (unreadable with every configured key, or changing meanwhile: see the
output), 2 when the request failed.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = subparsers.add_parser(
        "admin", help="operate the deployment (secret key rotation, storage migration)",
        description="Operate a basetrigger deployment.", epilog=ADMIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = group.add_subparsers(title="commands", metavar="<command>", required=True)
    rotate = commands.add_parser(
        "rotate-secrets", parents=[connection_options()],
        help="re-encrypt every stored secret with the first BASETRIGGER_SECRET_KEY key",
        description="Re-encrypt every task's secret build args and git token with the first key of "
        "the app's BASETRIGGER_SECRET_KEY, so the keys after it can be dropped.",
    )
    rotate.add_argument("--output", "-o", choices=("text", "json"), default="text",
                        help="output format (default: text)")
    rotate.set_defaults(func=rotate_secrets)
    migrate = commands.add_parser(
        "migrate", parents=[connection_options()],
        help="move rows stored by an older schema into today's layout (idempotent)",
        description="Move the rows an older version kept in one table partition into the "
        "partitions of today's layout: runs (schema 2 -> 3), decisions and wave members (schema 1 -> 2). "
        "Old rows read without it; it makes every list one partition read again. Safe to run again, "
        "and while the app runs.",
    )
    migrate.add_argument("--output", "-o", choices=("text", "json"), default="text",
                         help="output format (default: text)")
    migrate.set_defaults(func=migrate_rows)


@handles_errors
def rotate_secrets(args: argparse.Namespace) -> int:
    report = Client.from_args(args).request("POST", "secrets/rotate", body={}).json()
    if args.output == "json":
        print(to_json(report))
    else:
        print(f"encrypting key: {report.get('primary_key')} (1 of {report.get('keys')} configured)")
        for label, key in (("re-encrypted", "resealed"), ("already current", "current"),
                           ("unreadable with every configured key", "unreadable"),
                           ("changed meanwhile, run again", "busy")):
            names = report.get(key) or []
            print(f"{label}: {len(names)}" + (f" ({', '.join(names)})" if names else ""))
    if report.get("complete"):
        print("every stored secret is sealed with the first key: the other keys can be dropped",
              file=sys.stderr)
        return EXIT_OK
    print("some secrets are not sealed with the first key: keep the other keys for now", file=sys.stderr)
    return EXIT_RUN_FAILED


@handles_errors
def migrate_rows(args: argparse.Namespace) -> int:
    report = Client.from_args(args).request("POST", "admin/migrate", body={}).json()
    if args.output == "json":
        print(to_json(report))
    else:
        runs, decisions, waves = (report.get(name) or {} for name in ("runs", "decisions", "waves"))
        print(f"runs moved: {runs.get('runs', 0)} (old rows removed: {runs.get('rows_removed', 0)})")
        print(f"decisions moved: {decisions.get('decisions', 0)} (event markers: "
              f"{decisions.get('markers', 0)}, stale push holds removed: {decisions.get('holds', 0)})")
        print(f"waves whose members moved: {waves.get('waves', 0)} (members: {waves.get('members', 0)},"
              f" ready rows: {waves.get('ready_rows', 0)})")
    return EXIT_OK
