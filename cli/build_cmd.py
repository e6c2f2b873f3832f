"""`basetrigger build`: a quick build, like `az acr build`.

The context directory is packed into a .tar.gz in memory (honouring its `.dockerignore`), sent
base64-encoded to `POST /api/builds`, and the run's log is streamed until the run ends. The exit
status is 0 only when the run Succeeded.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import posixpath
import re
import sys
import tarfile
from pathlib import Path

from cli.client import (
    EXIT_ERROR,
    EXIT_OK,
    ApiError,
    Client,
    connection_options,
    follow_run,
    handles_errors,
    key_value,
    local_path,
    report_end,
)
from cli.output import to_json

BUILD_EPILOG = """\
examples:
  basetrigger build --image baseimages/node:9-alpine --file Dockerfile-base .
  basetrigger build --image app:v1 --image app:latest --build-arg VERSION=1 ./src

Image names without a registry are pushed to the service's registry (localhost:5000 on the
local stack). The log is streamed until the run ends; the exit status is 0 only if it Succeeded
(1 if the run failed, 2 if the build could not be queued).
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "build",
        help="quick build: upload a context, build and push an image (az acr build)",
        description="Upload a local context directory, build it with the service's builder and push "
        "the images, streaming the log until the run ends.",
        epilog=BUILD_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[connection_options()],
    )
    parser.add_argument("context", metavar="CONTEXT", help="the build context: a local directory")
    parser.add_argument(
        "--image", "-t", dest="images", action="append", required=True, metavar="IMAGE",
        help="name and tag of an image to build and push (repeatable), e.g. helloworld:v1",
    )
    parser.add_argument(
        "--file", "-f", default="Dockerfile",
        help="the Dockerfile, relative to the context (default: Dockerfile)",
    )
    parser.add_argument(
        "--build-arg", dest="build_args", action="append", default=[], type=key_value,
        metavar="KEY=VALUE", help="a build argument (repeatable); KEY alone takes $KEY",
    )
    parser.add_argument("--platform", default="linux", help="the platform to build for (default: linux)")
    parser.add_argument(
        "--no-wait", action="store_true",
        help="do not wait for the run to end: print the queued run and return",
    )
    parser.add_argument(
        "--no-logs", action="store_true", help="wait for the run to end without printing its log",
    )
    parser.set_defaults(func=run_build)


# --------------------------------------------------------------------------------------------------
# The context archive
# --------------------------------------------------------------------------------------------------


class ContextError(ValueError):
    pass


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus `**`) as a regular expression."""
    out, i = [], 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                out.append("(?:.*/)?")
                i += 1
            else:
                out.append(".*")
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(char))
            else:
                body = pattern[i + 1 : end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = end
        elif char == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out) + r"\Z")


class DockerIgnore:
    """The rules of a `.dockerignore`: the last pattern matching a path (or a folder above it) wins."""

    def __init__(self, text: str = ""):
        self.rules: list[tuple[re.Pattern[str], bool]] = []
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            if negate:
                line = line[1:].strip()
            line = posixpath.normpath(line.lstrip("/")) if line.strip("/") else ""
            if line and line != ".":
                self.rules.append((_pattern_regex(line), negate))

    @classmethod
    def read(cls, context: Path) -> DockerIgnore:
        path = context / ".dockerignore"
        return cls(path.read_text(encoding="utf-8", errors="replace") if path.is_file() else "")

    @property
    def has_exceptions(self) -> bool:
        return any(negate for _, negate in self.rules)

    def excluded(self, rel: str) -> bool:
        parts = rel.split("/")
        candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        result = False
        for regex, negate in self.rules:
            if any(regex.match(candidate) for candidate in candidates):
                result = not negate
        return result


def resolve_dockerfile(context: Path, file: str) -> str:
    """The Dockerfile as a path relative to the context (given relative to it, or to the cwd)."""
    if (context / file).is_file():
        rel = Path(os.path.relpath((context / file).resolve(), context.resolve()))
    elif Path(file).is_file():
        rel = Path(os.path.relpath(Path(file).resolve(), context.resolve()))
    else:
        raise ContextError(f"no Dockerfile {file!r} in the context {context}")
    if rel.parts and rel.parts[0] == "..":
        raise ContextError(f"the Dockerfile {file!r} is outside the context {context}")
    return rel.as_posix()


def pack_context(context: Path, dockerfile: str) -> tuple[bytes, int]:
    """The context as .tar.gz bytes and the number of files in it."""
    ignore = DockerIgnore.read(context)
    buffer = io.BytesIO()
    count = 0
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=6) as tar:
        for root, dirs, files in os.walk(context):
            dirs.sort()
            rel_root = Path(root).relative_to(context).as_posix()
            rel_root = "" if rel_root == "." else rel_root
            for name in list(dirs):
                rel = f"{rel_root}/{name}" if rel_root else name
                if ignore.excluded(rel):
                    if not ignore.has_exceptions:
                        dirs.remove(name)  # nothing under it can come back
                    continue
                tar.add(Path(root) / name, arcname=rel, recursive=False)
            for name in sorted(files):
                rel = f"{rel_root}/{name}" if rel_root else name
                if ignore.excluded(rel) and rel not in (dockerfile, ".dockerignore"):
                    continue
                try:
                    tar.add(Path(root) / name, arcname=rel, recursive=False)
                except OSError as exc:
                    raise ContextError(f"cannot read {rel} in the context: {exc.strerror or exc}") from exc
                count += 1
    return buffer.getvalue(), count


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024 or unit == "MiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


# --------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------


@handles_errors
def run_build(args: argparse.Namespace) -> int:
    client = Client.from_args(args)  # before packing: a missing URL is said at once
    context = local_path(args.context)
    if not context.is_dir():
        print(f"error: the context {args.context!r} is not a directory", file=sys.stderr)
        return EXIT_ERROR
    try:
        dockerfile = resolve_dockerfile(context, args.file)
        archive, count = pack_context(context, dockerfile)
    except ContextError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(f"Packing source code into tar to upload: {count} files, {_size(len(archive))}", file=sys.stderr)

    run = client.quick_build({
        "images": args.images,
        "dockerfile": dockerfile,
        "build_args": dict(args.build_args),
        "platform": args.platform,
        "context": base64.b64encode(archive).decode("ascii"),
    })
    run_id = run.get("run_id")
    if not run_id:
        raise ApiError("basetrigger accepted the build but answered no run_id")
    print(f"Queued a build with ID: {run_id}", file=sys.stderr)
    if args.no_wait:
        print(to_json(run))
        return EXIT_OK
    return wait_and_report(client, run_id, show_log=not args.no_logs)


def wait_and_report(client: Client, run_id: str, show_log: bool = True) -> int:
    """Follow the run (streaming its log unless show_log is False) and report how it ended."""
    print("Waiting for an agent...", file=sys.stderr)
    try:
        run = follow_run(client, run_id, out=sys.stdout if show_log else io.StringIO())
    except KeyboardInterrupt:
        print(f"\nstopped following run {run_id}; it goes on "
              f"(basetrigger task logs --run-id {run_id})", file=sys.stderr)
        raise
    return report_end(run)
