"""`python -m devhost`: serve `function_app.py` locally the way `func start` would."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from .queues import DEFAULT_LEASE_SECONDS
from .server import EXIT_ABANDONED, Options, run


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m devhost",
        description="A local Azure Functions host for this app (Core Tools cannot be installed here).",
    )
    parser.add_argument(
        "--app", default="function_app", help="module holding the FunctionApp (default: function_app)"
    )
    parser.add_argument("--root", type=Path, default=Path("."), help="app root with host.json (default: .)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help="port (default: $HOST_PORT, else local.settings.json Host.LocalHttpPort, else 7071)",
    )
    parser.add_argument("--key", default=None, help="function key (default: $DEVHOST_KEY, else a random one)")
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=None,
        help="request body limit (default: $FUNCTIONS_REQUEST_BODY_SIZE_LIMIT, else 100 MB)",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=30.0,
        help="seconds in-flight invocations get on shutdown (default: 30)",
    )
    parser.add_argument(
        "--queue-lease",
        type=float,
        default=DEFAULT_LEASE_SECONDS,
        help=f"seconds a queue message is leased, renewed at half (default: {DEFAULT_LEASE_SECONDS})",
    )
    parser.add_argument(
        "--log-level", default=None, help="DEBUG, INFO, ... (default: host.json logging.logLevel.default)"
    )
    args = parser.parse_args(argv)
    return Options(
        app=args.app,
        root=args.root,
        host=args.host,
        port=args.port,
        key=args.key,
        max_body_bytes=args.max_body_bytes,
        grace_seconds=args.grace,
        queue_lease_seconds=args.queue_lease,
        log_level=args.log_level,
    )


def main(argv: list[str] | None = None) -> int:
    code = run(parse_args(argv))
    if code == EXIT_ABANDONED:
        # Function threads cannot be stopped and would keep the interpreter from exiting.
        logging.shutdown()
        sys.stdout.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
