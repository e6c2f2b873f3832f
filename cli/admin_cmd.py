"""`basetrigger admin ...`: operating a deployment.

    admin rotate-secrets    re-encrypt every stored secret with the first BASETRIGGER_SECRET_KEY key

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

The exit status is 0 when every stored secret is sealed with the first key (the other keys may be
dropped), 1 when some are not (unreadable with every configured key, or changing meanwhile: see the
output), 2 when the request failed.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    group = subparsers.add_parser(
        "admin", help="operate the deployment (secret key rotation)",
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
