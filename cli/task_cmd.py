"""`basetrigger task ...`: tasks and their runs, shaped like `az acr task ...`.

    task create / update / show / list / delete     the tasks
    task run --name N                               a manual run, its log streamed to the end
    task list-runs / show-run / logs / cancel-run   the runs (quick builds included)
    task why / stale                                why (not) rebuilt; tasks left on old bases

Lists print JSON by default, as `az` does; `--output table` prints az's table columns.

`task update` changes the task only if nobody changed it since it read it (If-Match with the
ETag it reads first, or the one given with --if-match): on a conflict it says so and changes
nothing, rather than merging its options over a version the user has not seen. `task delete
--if-match ETAG` deletes only that version.
"""

from __future__ import annotations

import argparse
import base64
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any

from cli import task_credential, task_insight, task_timer
from cli.build_cmd import ContextError as PackError
from cli.build_cmd import pack_context, wait_and_report
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
)
from cli.output import runs_table, tasks_table, to_json
from shared.domain.builds import is_git_url
from shared.domain.vocabulary import BaseChangePolicy, RunStatus, TriggerType, UpdatePolicy, names

TASK_EPILOG = """\
examples:
  basetrigger task create --name taskhelloworld --image 'helloworld:{{.Run.ID}}' \\
      --arg REGISTRY_NAME=localhost:5000 --context examples/helloworld --file Dockerfile-app
  basetrigger task run --name taskhelloworld
  basetrigger task list-runs --output table
  basetrigger task logs --name taskhelloworld
"""


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "yes", "1", "on", "enabled"):
        return True
    if value in ("false", "no", "0", "off", "disabled"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def _choice(enum: type[StrEnum]) -> Callable[[str], str]:
    """An argparse type taking a value of `enum` in any letter case."""
    def parse(text: str) -> str:
        for choice in names(enum):
            if text.lower() == choice.lower():
                return choice
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(names(enum))}, not {text!r}")

    return parse


_trigger_type = _choice(TriggerType)
_update_policy = _choice(UpdatePolicy)
_base_change_policy = _choice(BaseChangePolicy)
_status = _choice(RunStatus)


def _top(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"expected a number from 1 to 1000, not {text!r}")
    return value


def _output(parser: argparse.ArgumentParser, default: str = "json") -> None:
    parser.add_argument("--output", "-o", choices=("json", "table"), default=default,
                        help=f"output format (default: {default})")


def _task_options(parser: argparse.ArgumentParser, creating: bool) -> None:
    """The options of `task create`; on `task update` each is optional and only changes what is given."""
    parser.add_argument("--name", "-n", required=True, help="the task's name")
    parser.add_argument(
        "--image", "-t", dest="images", action="append", required=creating, default=None, metavar="IMAGE",
        help="image name and tag to build (repeatable); {{.Run.ID}} is replaced by the run's ID"
        + ("" if creating else "; replaces the task's images"),
    )
    parser.add_argument(
        "--context", "-c", required=creating,
        help="a local directory or a git URL. The local stack reads the directory where it is, at each "
        "run; a service that cannot (Azure) gets the directory uploaded now, as `build` does: run "
        "`task update --context DIR` again to send changes",
    )
    parser.add_argument("--file", "-f", default="Dockerfile" if creating else None,
                        help="the Dockerfile, relative to the context"
                        + (" (default: Dockerfile)" if creating else ""))
    parser.add_argument("--branch", help="the git branch to build (default: the repository's default)")
    parser.add_argument(
        "--arg", dest="build_args", action="append", default=None, type=key_value, metavar="KEY=VALUE",
        help="a build argument (repeatable)" + ("" if creating else "; replaces the task's build arguments"),
    )
    parser.add_argument(
        "--secret-arg", dest="secret_args", action="append", default=None, type=key_value,
        metavar="KEY=VALUE",
        help="a secret (repeatable): stored encrypted, hidden from logs and answers. The local buildah "
        "builder passes it as a build secret, never as a build arg: read it with "
        "RUN --mount=type=secret,id=KEY (the file /run/secrets/KEY); an ARG KEY gets nothing and "
        "is warned about. The ACR builder passes it as a build arg, like az acr's --secret-arg "
        "(an ARG KEY reads it, and a RUN that uses it keeps it in the image history)"
        + ("" if creating else "; replaces the task's secret arguments"),
    )
    parser.add_argument(
        "--base-image-trigger-enabled", type=_bool, default=None, metavar="{true,false}",
        help="rebuild when a base image is updated" + (" (default: true)" if creating else ""),
    )
    parser.add_argument(
        "--base-image-trigger-type", type=_trigger_type, default=None,
        metavar="{" + ",".join(names(TriggerType)) + "}",
        help="Runtime: the final stage's base images; All: every stage's"
        + (" (default: Runtime)" if creating else ""),
    )
    parser.add_argument("--git-access-token", default=None,
                        help="a token for cloning the git context (stored encrypted, never shown)")
    parser.add_argument(
        "--update-policy", type=_update_policy, default=None,
        help="what a base update does: rebuild, rebase (swap the base's layers; you assert the image's "
             "own layers don't depend on them) or auto (rebase only where that provably equals a "
             "rebuild: a final stage of COPY/ADD/ENV/LABEL/... and a base whose config is unchanged)"
             + (" (default: rebuild)" if creating else ""))
    parser.add_argument(
        "--base-change-policy", type=_base_change_policy, default=None,
        metavar="{" + ",".join(names(BaseChangePolicy)) + "}",
        help="what a base change means for the runs it starts, by what changed (`base changes`): any "
             "(rebuild on any change), skip-identical (`identical content` is not built; the decision "
             "says so) or hold-os-release (`os release changed` holds the wave until `wave resume`)"
             + (" (default: any)" if creating else ""))
    parser.add_argument(
        "--rebase-check", default=None, metavar="COMMAND",
        help="a command run in a rebased image before it is tagged, e.g. \"node --version\" (no shell); "
             "if it fails, the run rebuilds" + ("" if creating else " ('' removes it)"))
    parser.add_argument("--platform", default=None,
                        help="the platform to build for" + (" (default: linux)" if creating else ""))
    parser.add_argument("--schedule", default=None,
                        help="run on this cron schedule, in UTC (e.g. '0 21 * * *'): the timer t1; "
                        "more with `task timer add`")
    parser.add_argument("--commit-trigger-enabled", type=_bool, default=None, metavar="{true,false}",
                        help="run on a push to the git context's branch (a webhook, or polling)"
                        + (" (default: false)" if creating else ""))
    parser.add_argument("--pull-request-trigger-enabled", type=_bool, default=None, metavar="{true,false}",
                        help="run on a pull request to the git context's branch"
                        + (" (default: false)" if creating else ""))
    parser.add_argument("--update-trigger-endpoint", default=None, metavar="URL",
                        help="POST a JSON notification here when a run of the task starts and when it "
                        "ends (docs/api.md)" + ("" if creating else "; '' removes it"))
    parser.add_argument("--update-trigger-secret-file", default=None, metavar="FILE",
                        help="a file holding the secret that signs those notifications "
                        "(X-Basetrigger-Signature-256); '-' reads it from stdin. Stored encrypted, "
                        "never shown; not an option value, so it stays off command lines")
    _output(parser)


def _etag(text: str) -> str:
    """An ETag as `task show` prints it, with or without its quotes (a shell drops them)."""
    text = text.strip()
    if not text:
        raise argparse.ArgumentTypeError("expected an etag, e.g. the `etag` of `task show`")
    return text if text == "*" or text.startswith(('"', 'W/"')) else f'"{text}"'


def _if_match(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--if-match", type=_etag, default=None, metavar="ETAG", help=help_text)


def _changed_meanwhile(name: str, exc: ApiError) -> ApiError:
    """The message for a 412: the task is at another version than the one the command acted on."""
    return ApiError(f"the task {name!r} changed since it was read (by someone else, or a build that "
                    f"finished): nothing was changed. Check it with `basetrigger task show --name {name}` "
                    "and run the command again", exc.status, exc.code)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = subparsers.add_parser(
        "task",
        help="tasks that rebuild images when their base images are updated (az acr task)",
        description="Manage tasks and their runs, like `az acr task`.",
        epilog=TASK_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = group.add_subparsers(title="commands", metavar="<command>", required=True)
    conn = connection_options()

    def add(name: str, help_text: str, func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help_text, description=help_text[:1].upper() + help_text[1:]
                                     + ".", parents=[conn])
        parser.set_defaults(func=func)
        return parser

    create = add("create", "create a task", task_create)
    _task_options(create, creating=True)

    update = add("update", "change a task (only the options given)", task_update)
    _task_options(update, creating=False)
    _if_match(update, "change the task only if it is still at this version (its etag, as `task show` "
              "gives it; default: the version read just before the change)")

    show = add("show", "show a task", task_show)
    show.add_argument("--name", "-n", required=True, help="the task's name")
    _output(show)

    listing = add("list", "list the tasks", task_list)
    _output(listing)

    delete = add("delete", "delete a task", task_delete)
    delete.add_argument("--name", "-n", required=True, help="the task's name")
    delete.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    _if_match(delete, "delete the task only if it is still at this version (its etag, as `task show` "
              "gives it)")

    run = add("run", "run a task now; streams its log until the run ends", task_run)
    run.add_argument("--name", "-n", required=True, help="the task's name")
    run.add_argument("--force", action="store_true",
                     help="rebuild from scratch: no layer cache, base images pulled anew")
    run.add_argument("--no-logs", action="store_true",
                     help="do not stream the log: print the queued run and return")

    runs = add("list-runs", "list runs, newest first (quick builds included)", task_list_runs)
    runs.add_argument("--name", "-n", help="only the runs of this task")
    runs.add_argument("--run-status", type=_status, metavar="STATUS",
                      help=f"only runs in this status ({', '.join(names(RunStatus))})")
    runs.add_argument("--image", help="only runs that produced this image (e.g. helloworld:da6; "
                      "names without a registry mean the default registry)")
    runs.add_argument("--top", type=_top, default=15, help="how many runs at most (default: 15)")
    _output(runs)

    show_run = add("show-run", "show a run", task_show_run)
    show_run.add_argument("--run-id", required=True, help="the run's ID, e.g. da6")
    _output(show_run)

    logs = add("logs", "show a run's log, following it until the run ends", task_logs)
    which = logs.add_mutually_exclusive_group(required=True)
    which.add_argument("--run-id", help="the run's ID, e.g. da6")
    which.add_argument("--name", "-n", help="the newest run of this task")

    cancel = add("cancel-run", "cancel a queued or running run", task_cancel_run)
    cancel.add_argument("--run-id", required=True, help="the run's ID, e.g. da6")

    task_insight.register(add)  # task why, task stale
    task_credential.register(commands, conn)  # task credential add|list|update|remove
    task_timer.register(commands, conn)  # task timer add|list|update|remove


# --------------------------------------------------------------------------------------------------
# Task commands
# --------------------------------------------------------------------------------------------------


def _context(value: str) -> str:
    if is_git_url(value):
        return value
    path = local_path(value)
    if not path.is_dir():
        raise ApiError(f"the context {value!r} is neither a directory nor a git URL")
    return str(path.resolve())


def _context_archive(args: argparse.Namespace) -> str:
    """The context directory as a base64 .tar.gz (honouring .dockerignore), as `build` uploads it."""
    context = local_path(args.context)
    dockerfile = args.file if args.file and (context / args.file).is_file() else "Dockerfile"
    try:
        archive, count = pack_context(context, dockerfile)
    except PackError as exc:
        raise ApiError(str(exc)) from None
    print(f"Packing the context to upload with the task: {count} files, {len(archive) / 1024:.1f} KiB",
          file=sys.stderr)
    return base64.b64encode(archive).decode("ascii")


def _send(args: argparse.Namespace, request: Callable[[dict[str, Any]], dict[str, Any]],
          spec: dict[str, Any]) -> dict[str, Any]:
    """Send a task, and send it again with its directory's archive when the service cannot read the
    directory itself (the cloud, or a service on another machine): the local stack reads it directly
    at each run, so nothing is packed there."""
    try:
        return request(spec)
    except ApiError as exc:
        if exc.code != "ContextUploadNeeded" or "context" not in spec or is_git_url(spec["context"]):
            raise
    return request({**spec, "context_archive": _context_archive(args)})


# TaskCreate fields and the options that give them (argparse dest -> field), with what turns the
# option's value into the field's: an empty value clears an optional field ("" -> None).
def _as_given(value: Any) -> Any:
    return value


def _or_none(value: Any) -> Any:
    return value or None


_SPEC_OPTIONS: tuple[tuple[str, str, Callable[[Any], Any]], ...] = (
    ("images", "images", _as_given),
    ("context", "context", lambda value: _context(value)),
    ("file", "dockerfile", _as_given),
    ("branch", "branch", _or_none),
    ("build_args", "build_args", dict),
    ("secret_args", "secret_args", dict),
    ("git_access_token", "git_access_token", _or_none),
    ("base_image_trigger_enabled", "base_image_trigger_enabled", _as_given),
    ("base_image_trigger_type", "base_image_trigger_type", _as_given),
    ("platform", "platform", _as_given),
    ("schedule", "schedule", _as_given),
    ("commit_trigger_enabled", "commit_trigger_enabled", _as_given),
    ("pull_request_trigger_enabled", "pull_request_trigger_enabled", _as_given),
    ("update_trigger_endpoint", "update_trigger_endpoint", _or_none),
    ("update_trigger_secret_file", "update_trigger_secret", lambda path: _read_secret(path)),
    ("update_policy", "update_policy", _as_given),
    ("rebase_check", "rebase_check", _or_none),
    ("base_change_policy", "base_change_policy", _as_given),
)


def _spec(args: argparse.Namespace) -> dict[str, Any]:
    """The TaskCreate fields the options give (only those given, so update changes nothing else)."""
    return {field: convert(getattr(args, dest)) for dest, field, convert in _SPEC_OPTIONS
            if getattr(args, dest) is not None}


def _read_secret(path: str) -> str:
    """A secret from a file or stdin, without its final newline (what `echo` or an editor adds)."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise ApiError(f"cannot read the update trigger secret: {exc.strerror}") from exc
    return text.rstrip("\r\n")


def _print_tasks(tasks: list[dict[str, Any]], output: str, single: bool = False) -> None:
    for task in tasks:  # on stderr, so that the JSON on stdout stays one document
        for warning in task.get("warnings") or []:
            print(f"warning: task {task.get('name')}: {warning}", file=sys.stderr)
    if output == "table":
        print(tasks_table(tasks))
    else:
        print(to_json(tasks[0] if single else tasks))


@handles_errors
def task_create(args: argparse.Namespace) -> int:
    client = Client.from_args(args)
    task = _send(args, client.create_task, {"name": args.name, **_spec(args)})
    _print_tasks([task], args.output, single=True)
    return EXIT_OK


@handles_errors
def task_update(args: argparse.Namespace) -> int:
    client = Client.from_args(args)
    changes = _spec(args)
    if not changes:
        print("error: nothing to change: give at least one option besides --name", file=sys.stderr)
        return EXIT_ERROR
    # The options replace whole fields (images, build args...): they apply to the version read
    # here, and a change made meanwhile is reported rather than silently overwritten.
    version = args.if_match or client.task_version(args.name)
    try:
        task = _send(args, lambda spec: client.update_task(args.name, spec, if_match=version), changes)
    except ApiError as exc:
        if exc.status == 412:
            raise _changed_meanwhile(args.name, exc) from None
        raise
    _print_tasks([task], args.output, single=True)
    return EXIT_OK


@handles_errors
def task_show(args: argparse.Namespace) -> int:
    _print_tasks([Client.from_args(args).get_task(args.name)], args.output, single=True)
    return EXIT_OK


@handles_errors
def task_list(args: argparse.Namespace) -> int:
    _print_tasks(Client.from_args(args).list_tasks(), args.output)
    return EXIT_OK


@handles_errors
def task_delete(args: argparse.Namespace) -> int:
    client = Client.from_args(args)
    if not args.yes:
        if not sys.stdin.isatty():
            print("error: not deleting without confirmation: pass --yes", file=sys.stderr)
            return EXIT_ERROR
        answer = input(f"Are you sure you want to delete the task {args.name!r}? (y/n): ")
        if answer.strip().lower() not in ("y", "yes"):
            return EXIT_OK
    try:
        client.delete_task(args.name, if_match=args.if_match)
    except ApiError as exc:
        if exc.status == 412:
            raise _changed_meanwhile(args.name, exc) from None
        raise
    return EXIT_OK


# --------------------------------------------------------------------------------------------------
# Run commands
# --------------------------------------------------------------------------------------------------


@handles_errors
def task_run(args: argparse.Namespace) -> int:
    client = Client.from_args(args)
    run = client.run_task(args.name, force=args.force)
    run_id = run.get("run_id")
    if not run_id:
        raise ApiError("basetrigger accepted the run but answered no run_id")
    print(f"Queued a run with ID: {run_id}", file=sys.stderr)
    if args.no_logs:
        print(to_json(run))
        return EXIT_OK
    return wait_and_report(client, run_id)


@handles_errors
def task_list_runs(args: argparse.Namespace) -> int:
    client = Client.from_args(args)
    page = client.list_runs(top=args.top, task=args.name, status=args.run_status, image=args.image)
    runs = page.get("runs", [])
    if args.output == "table":
        print(runs_table(runs))
    else:
        print(to_json(runs))
    return EXIT_OK


@handles_errors
def task_show_run(args: argparse.Namespace) -> int:
    run = Client.from_args(args).get_run(args.run_id)
    print(runs_table([run]) if args.output == "table" else to_json(run))
    return EXIT_OK


@handles_errors
def task_logs(args: argparse.Namespace) -> int:
    client = Client.from_args(args)
    run_id = args.run_id
    if run_id is None:
        runs = client.list_runs(top=1, task=args.name).get("runs", [])
        if not runs:
            client.get_task(args.name)  # an unknown task says so
            print(f"error: the task {args.name!r} has no runs yet", file=sys.stderr)
            return EXIT_ERROR
        run_id = runs[0]["run_id"]
        print(f"Showing logs of the last run of {args.name}: {run_id}", file=sys.stderr)
    try:
        run = follow_run(client, run_id)
    except KeyboardInterrupt:
        print(f"\nstopped following run {run_id}", file=sys.stderr)
        raise
    end = run.get("status")
    reason = f": {run['reason']}" if run.get("reason") and end != RunStatus.SUCCEEDED else ""
    print(f"Run {run_id}: {end}{reason}", file=sys.stderr)
    return EXIT_OK


@handles_errors
def task_cancel_run(args: argparse.Namespace) -> int:
    run = Client.from_args(args).cancel_run(args.run_id)
    print(f"Run {run.get('run_id', args.run_id)}: {run.get('status', 'Canceled')}", file=sys.stderr)
    return EXIT_OK
