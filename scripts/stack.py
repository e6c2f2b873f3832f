#!/usr/bin/env python3
"""The local stack basetrigger runs and is tested on: Azurite, a TLS registry, the local Functions host.

    python3 scripts/stack.py up        # start what is not running yet (harmless when all runs)
    python3 scripts/stack.py status    # running / stopped, per part
    python3 scripts/stack.py env       # `export K=V` lines: eval "$(python3 scripts/stack.py env)"
    python3 scripts/stack.py down      # stop exactly what `up` started, by pid

Parts (see docs/local-stack.md; the names and defaults every part agrees on are in docs/contract.md):
  azurite   Azure Storage emulator (npm, installed by scripts/install.sh), blob/queue/table on 127.0.0.1
  registry  Debian's docker-registry (CNCF distribution 2.8) with TLS from a CA made here, notifying
            the host's webhook on every push
  host      `python -m devhost --port HOST_PORT` from the project root (skipped until devhost/ exists)

Everything lives in STACK_DIR (default <project>/.stack): data, logs/<part>.log, pids/<part>.pid,
the CA, the function key. Settings come from flags, then environment variables, then what the last
`up` of this STACK_DIR recorded in stack.json, then the defaults. Only the standard library is
used, so this runs before anything is pip-installed.

This file is the command line; the work is done by the package next to it, scripts/local_stack/.
Other code can import this file: `stack_env(stack_dir) -> dict` gives the same values as `env`, and
the names below (load_config, status, running_pid, ...) are those of the package's modules.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

# Run as `python3 scripts/stack.py`, Python puts scripts/ on sys.path itself; loaded from its path
# by importlib (the tests, scripts/demo.py) it does not, and local_stack would not be found.
_SCRIPTS = str(Path(__file__).resolve().parent)
if _SCRIPTS not in sys.path:
    sys.path.insert(0, _SCRIPTS)

# Re-exported: what importers of this file used before the package existed.
from local_stack.azurite import azurite_command, azurite_ready, connection_string  # noqa: E402
from local_stack.certs import SYSTEM_CERTS_D, ensure_certificates, registry_context  # noqa: E402
from local_stack.commands import down, print_status, status, up  # noqa: E402
from local_stack.environment import env_for, stack_env  # noqa: E402
from local_stack.host import (  # noqa: E402
    HOST_CODE,
    example_settings,
    host_available,
    host_code_changed,
    host_command,
    host_environment,
    host_ready,
    host_status,
)
from local_stack.keys import function_key, secret_key  # noqa: E402
from local_stack.net import port_open  # noqa: E402
from local_stack.parts import PARTS, READY, READY_TIMEOUT, STOP_TIMEOUT, is_ours, running_pid  # noqa: E402
from local_stack.processes import pid_file, proc_alive, read_pid  # noqa: E402
from local_stack.registry import registry_command, registry_config_text, registry_ready  # noqa: E402
from local_stack.settings import (  # noqa: E402
    AZURITE_ACCOUNT,
    AZURITE_ACCOUNT_KEY,
    PORT_DEFAULTS,
    PROJECT,
    WEBHOOK_PATH,
    StackConfig,
    StackError,
    default_stack_dir,
    load_config,
)

__all__ = [
    "AZURITE_ACCOUNT",
    "AZURITE_ACCOUNT_KEY",
    "HOST_CODE",
    "PARTS",
    "PORT_DEFAULTS",
    "PROJECT",
    "READY",
    "READY_TIMEOUT",
    "STOP_TIMEOUT",
    "SYSTEM_CERTS_D",
    "WEBHOOK_PATH",
    "StackConfig",
    "StackError",
    "azurite_command",
    "azurite_ready",
    "connection_string",
    "default_stack_dir",
    "down",
    "ensure_certificates",
    "env_for",
    "example_settings",
    "function_key",
    "host_available",
    "host_code_changed",
    "host_command",
    "host_environment",
    "host_ready",
    "host_status",
    "is_ours",
    "load_config",
    "main",
    "pid_file",
    "port_open",
    "proc_alive",
    "read_pid",
    "registry_command",
    "registry_config_text",
    "registry_context",
    "registry_ready",
    "running_pid",
    "secret_key",
    "stack_env",
    "status",
    "up",
]


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--stack-dir", help="state folder (env STACK_DIR, default <project>/.stack)")
    for name in PORT_DEFAULTS:
        common.add_argument(
            "--" + name.lower().replace("_", "-"),
            dest=name.lower(),
            type=int,
            metavar="PORT",
            help=f"env {name}, default {PORT_DEFAULTS[name]}",
        )
    p = argparse.ArgumentParser(
        prog="stack.py",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    u = sub.add_parser("up", parents=[common], help="start the stack (what is not running yet)")
    u.add_argument("--no-host", action="store_true", help="do not start the local Functions host")
    u.add_argument(
        "--no-system-trust",
        action="store_true",
        help=f"do not copy the CA into {SYSTEM_CERTS_D} (also: STACK_SYSTEM_TRUST=0)",
    )
    u.add_argument("--timeout", type=float, help="seconds each part may take to become ready")
    u.add_argument(
        "--reload-host",
        action="store_true",
        help="restart a running host whose code (function_app.py, functions/, shared/, devhost/) changed",
    )
    sub.add_parser("down", parents=[common], help="stop what `up` started")
    sub.add_parser("status", parents=[common], help="show each part running/stopped (exit 3 if not all run)")
    sub.add_parser("env", parents=[common], help="print `export K=V` lines for the stack")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg = load_config(args.stack_dir, **{n.lower(): getattr(args, n.lower()) for n in PORT_DEFAULTS})
        if args.command == "up":
            system_trust = not args.no_system_trust and os.environ.get("STACK_SYSTEM_TRUST", "1") != "0"
            up(
                cfg,
                with_host=not args.no_host,
                system_trust=system_trust,
                timeout=args.timeout,
                reload_host=args.reload_host,
            )
        elif args.command == "down":
            down(cfg)
        elif args.command == "status":
            return print_status(cfg)
        elif args.command == "env":
            for k, v in env_for(cfg).items():
                print(f"export {k}={shlex.quote(v)}")
    except StackError as exc:
        print(f"stack.py: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `stack.py env | head`: the reader left; nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
