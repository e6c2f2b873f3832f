"""`basetrigger task credential add|list|update|remove` (registered by cli/task_cmd.py under `task`).

Like `az acr task credential`: per task and login server, a username and password (basic
credentials, used for the registry's token flow and by the build to pull the bases), or
`--use-identity` for an Azure Container Registry (the app's managed identity). Passwords are sent to
the API once, stored sealed, and never printed: `list` shows whether one is stored.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from cli.client import EXIT_OK, ApiError, Client, handles_errors
from cli.output import table, to_json

COLUMNS = ("LOGIN SERVER", "USERNAME", "PASSWORD", "IDENTITY")
EPILOG = """\
examples:
  basetrigger task credential add --name app --login-server registry.example.com -u ci -p "$PW"
  basetrigger task credential add --name app --login-server myregistry.azurecr.io --use-identity
  basetrigger task credential list --name app
  basetrigger task credential update --name app --login-server registry.example.com --password "$NEW"
  basetrigger task credential remove --name app --login-server registry.example.com

--password - reads the password from standard input (no password on the command line); without
--password, add and update ask for it when a terminal is attached.
"""


def credentials_table(answer: dict[str, Any]) -> str:
    return table(COLUMNS, ([c["login_server"], c.get("username") or "", "***" if c.get("password") else "",
                            "yes" if c.get("use_identity") else ""] for c in answer.get("credentials", [])))


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser],
             conn: argparse.ArgumentParser) -> None:
    group = commands.add_parser(
        "credential", help="registry credentials of a task (az acr task credential)",
        description="Registry credentials a task uses to read and pull its base images.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = group.add_subparsers(title="commands", metavar="<command>", required=True)

    def add(name: str, help_text: str, func: Any) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, help=help_text, description=help_text[:1].upper() + help_text[1:] + ".",
                                parents=[conn])
        parser.add_argument("--name", "-n", required=True, help="the task")
        parser.set_defaults(func=func)
        return parser

    for verb, text, func in (("add", "add a registry credential to a task", credential_add),
                             ("update", "change a task's registry credential", credential_update)):
        parser = add(verb, text, func)
        parser.add_argument("--login-server", required=True, help="the registry host, e.g. myreg.azurecr.io")
        parser.add_argument("--username", "-u", help="the username")
        parser.add_argument("--password", "-p", help="the password or token ('-': read it from stdin)")
        parser.add_argument("--use-identity", action="store_true",
                            help="sign in with the app's managed identity (ACR login servers only)")
        parser.add_argument("--output", "-o", choices=("table", "json"), default="table")
    listing = add("list", "list a task's registry credentials", credential_list)
    listing.add_argument("--output", "-o", choices=("table", "json"), default="table")
    remove = add("remove", "remove a task's registry credential", credential_remove)
    remove.add_argument("--login-server", required=True, help="the registry host")
    remove.add_argument("--output", "-o", choices=("table", "json"), default="table")


def _password(args: argparse.Namespace, required: bool) -> str | None:
    if args.password == "-":
        return sys.stdin.readline().rstrip("\n")
    if args.password is not None or args.use_identity or not required:
        password: str | None = args.password
        return password
    if sys.stdin.isatty():
        return getpass.getpass(f"password for {args.username} at {args.login_server}: ")
    raise ApiError("--password is required (or --password - to read it from standard input)")


def _show(args: argparse.Namespace, answer: dict[str, Any]) -> int:
    print(to_json(answer) if args.output == "json" else credentials_table(answer))
    return EXIT_OK


def _path(args: argparse.Namespace) -> str:
    return f"tasks/{args.name}/credentials"


@handles_errors
def credential_add(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"login_server": args.login_server}
    if args.use_identity:
        body["use_identity"] = True
    else:
        body.update(username=args.username, password=_password(args, required=bool(args.username)))
    return _show(args, Client.from_args(args).request("POST", _path(args), body=body).json())


@handles_errors
def credential_update(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"login_server": args.login_server}
    if args.use_identity:
        body["use_identity"] = True
    if args.username is not None:
        body["username"] = args.username
    password = _password(args, required=False)
    if password is not None:
        body["password"] = password
    return _show(args, Client.from_args(args).request("PATCH", _path(args), body=body).json())


@handles_errors
def credential_list(args: argparse.Namespace) -> int:
    return _show(args, Client.from_args(args).request("GET", _path(args)).json())


@handles_errors
def credential_remove(args: argparse.Namespace) -> int:
    answer = Client.from_args(args).request("DELETE", _path(args),
                                            params={"login_server": args.login_server}).json()
    return _show(args, answer)
