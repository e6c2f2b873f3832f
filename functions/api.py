"""HTTP API under /api: tasks, runs, logs, quick builds, decisions (see docs/api.md).

Each handler parses its input, calls shared/, and maps domain errors to status codes; the
`api_handler` decorator does the mapping once for all of them.

A task's answers carry its version as an ETag (also in the body, as `etag`); PATCH and DELETE
honour If-Match (412 when the task changed since), GET honours If-None-Match (304).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import azure.functions as func
from azure.core.exceptions import ServiceRequestError, ServiceResponseError

from functions.http import (
    BadRequest,
    PayloadTooLarge,
    entity_tag,
    error,
    if_match,
    int_param,
    json_body,
    json_response,
    none_match,
)
from functions.openapi import openapi_document
from shared.adapters.secret_box import SecretsUnavailable
from shared.bootstrap import services
from shared.domain.builds import ContextError, ContextTooLarge
from shared.domain.decisions import EventBusy
from shared.domain.images import qualify
from shared.domain.quarantine import InvalidQuarantine, NotQuarantined, Quarantined
from shared.domain.runs import RunConflict, RunNotCancelable, RunNotFound
from shared.domain.tasks import (
    ContextUploadNeeded,
    GraphChanged,
    Task,
    TaskChanged,
    TaskError,
    TaskExists,
    TaskNotFound,
    check_name,
)
from shared.domain.timers import DEFAULT_TIMER, TaskTimer
from shared.domain.vocabulary import RunStatus, TriggerType, UpdatePolicy, names
from shared.domain.waves import WaveConflict, WaveNotFound
from shared.service_layer.scheduling import MAX_CONTEXT_BYTES
from shared.service_layer.task_timers import TimerNotFound

bp = func.Blueprint()

MAX_JSON_BYTES = 256 * 1024
RETRY_AFTER_SECONDS = 10
# A base64 context is 4/3 of the archive, plus the small JSON around it.
MAX_BUILD_BYTES = MAX_CONTEXT_BYTES * 4 // 3 + MAX_JSON_BYTES

_ERRORS: list[tuple[type[Exception], int, str]] = [
    (PayloadTooLarge, 413, "PayloadTooLarge"),
    (BadRequest, 400, "BadRequest"),
    (TaskNotFound, 404, "TaskNotFound"),
    (RunNotFound, 404, "RunNotFound"),
    (TaskExists, 409, "TaskExists"),
    # If-Match named another version than the stored one: nothing was written.
    (TaskChanged, 412, "PreconditionFailed"),
    (RunNotCancelable, 409, "RunNotCancelable"),
    (TimerNotFound, 404, "TimerNotFound"),
    (RunConflict, 409, "Conflict"),
    (ContextUploadNeeded, 400, "ContextUploadNeeded"),  # before TaskError, which it is
    (TaskError, 400, "InvalidTask"),
    (WaveNotFound, 404, "WaveNotFound"),
    # A run that would build on a quarantined base digest: `quarantined: <reason>`.
    (Quarantined, 409, "Quarantined"),
    (InvalidQuarantine, 400, "InvalidQuarantine"),
    (NotQuarantined, 404, "NotQuarantined"),
    (WaveConflict, 409, "WaveConflict"),
    # Another delivery of the same push is being dispatched right now: try again in a moment.
    (EventBusy, 503, "Busy"),
    # Other tasks kept being created or changed while this one was checked for cycles.
    (GraphChanged, 503, "Busy"),
    (ContextTooLarge, 413, "ContextTooLarge"),
    (ContextError, 400, "InvalidContext"),
    # The service's own key is missing or wrong: not the caller's mistake.
    (SecretsUnavailable, 503, "SecretsUnavailable"),
]


def api_handler(handler):
    @functools.wraps(handler)
    def wrapper(req: func.HttpRequest) -> func.HttpResponse:
        try:
            return handler(req)
        except tuple(e for e, _, _ in _ERRORS) as exc:
            status, code = next((s, c) for e, s, c in _ERRORS if isinstance(exc, e))
            headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status == 503 else None
            if isinstance(exc, TaskChanged) and exc.etag:
                headers = {"ETag": entity_tag(exc.etag)}  # the version to read, merge onto and send again
            return error(status, code, str(exc), headers=headers)
        except (ServiceRequestError, ServiceResponseError) as exc:
            # Storage does not answer: not the caller's mistake, and worth trying again soon.
            logging.warning("storage unavailable: %s", exc.__class__.__name__)
            return error(503, "StorageUnavailable", "storage is not answering; try again shortly",
                         headers={"Retry-After": str(RETRY_AFTER_SECONDS)})

    return wrapper


def _str_map(value: Any, field: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                              for k, v in value.items()):
        raise BadRequest(f"{field} must be an object of strings")
    return dict(value)


def _task_fields(body: dict[str, Any], partial: bool) -> dict[str, Any]:
    """Map the API's TaskCreate fields onto Task's."""
    fields: dict[str, Any] = {}
    simple = {"context": "context", "dockerfile": "dockerfile", "branch": "branch",
              "git_access_token": "git_token", "platform": "platform",
              "update_trigger_endpoint": "update_trigger_endpoint",
              "update_trigger_secret": "update_trigger_secret", "rebase_check": "rebase_check"}
    nullable = {"branch", "git_access_token", "update_trigger_endpoint", "update_trigger_secret",
                "rebase_check"}
    for key, attr in simple.items():
        if key in body:
            if not isinstance(body[key], str) and not (body[key] is None and key in nullable):
                raise BadRequest(f"{key} must be a string")
            fields[attr] = body[key]
    if fields.get("update_trigger_endpoint") == "":
        fields["update_trigger_endpoint"] = None
    if "update_trigger_endpoint" in fields and fields["update_trigger_endpoint"] is None:
        fields.setdefault("update_trigger_secret", None)  # no endpoint, nothing to sign
    if "images" in body:
        images = body["images"]
        if not isinstance(images, list) or not all(isinstance(i, str) and i for i in images):
            raise BadRequest("images must be a list of image names")
        fields["images"] = images
    for key in ("build_args", "secret_args"):
        if key in body:
            fields[key] = _str_map(body[key], key)
    if "base_image_trigger_enabled" in body:
        if not isinstance(body["base_image_trigger_enabled"], bool):
            raise BadRequest("base_image_trigger_enabled must be true or false")
        fields["trigger_enabled"] = body["base_image_trigger_enabled"]
    if "base_image_trigger_type" in body:
        if body["base_image_trigger_type"] not in names(TriggerType):
            raise BadRequest(f"base_image_trigger_type must be {' or '.join(names(TriggerType))}")
        fields["trigger_type"] = TriggerType(body["base_image_trigger_type"])
    for key in ("commit_trigger_enabled", "pull_request_trigger_enabled"):
        if key in body:
            if not isinstance(body[key], bool):
                raise BadRequest(f"{key} must be true or false")
            fields[key] = body[key]
    if "schedule" in body and not isinstance(body["schedule"], str):
        raise BadRequest("schedule must be a cron expression such as '0 21 * * *'")
    if "schedule" in body and not partial:  # on PATCH, the route sets the timer itself
        fields["timers"] = [TaskTimer(name=DEFAULT_TIMER, schedule=body["schedule"])]
    if "update_policy" in body:
        if body["update_policy"] not in names(UpdatePolicy):
            raise BadRequest(f"update_policy must be {' or '.join(names(UpdatePolicy))}")
        fields["update_policy"] = UpdatePolicy(body["update_policy"])
    unknown = set(body) - set(simple) - {"images", "build_args", "secret_args", "name",
                                         "base_image_trigger_enabled", "base_image_trigger_type",
                                         "commit_trigger_enabled", "pull_request_trigger_enabled",
                                         "schedule", "update_policy"}
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
    if not partial:
        missing = [k for k in ("name", "images", "context") if k not in body]
        if missing:
            raise BadRequest(f"missing field(s): {', '.join(missing)}")
        if not isinstance(body["name"], str):
            raise BadRequest("name must be a string")
    return fields


def _context_archive(body: dict[str, Any]) -> str | None:
    """The base64 .tar.gz of a directory context, taken out of the TaskCreate fields."""
    archive = body.pop("context_archive", None)
    if archive is not None and (not isinstance(archive, str) or not archive):
        raise BadRequest("context_archive must be a base64-encoded .tar.gz of the context directory")
    return archive


# ---- OpenAPI ---------------------------------------------------------------------------------
@bp.function_name("api_openapi")
@bp.route(route="openapi.json", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def api_openapi(req: func.HttpRequest) -> func.HttpResponse:
    return json_response(openapi_document())


# ---- tasks -----------------------------------------------------------------------------------
def _task_json(task: Task) -> dict[str, Any]:
    return {**task.public_dict(), "etag": entity_tag(task.etag) if task.etag else None}


def _task_response(task: Task, status: int = 200) -> func.HttpResponse:
    headers = {"ETag": entity_tag(task.etag)} if task.etag else None
    return json_response(_task_json(task), status, headers)


@bp.function_name("api_tasks")
@bp.route(route="tasks", methods=["GET", "POST"], auth_level=func.AuthLevel.FUNCTION)
@api_handler
def api_tasks(req: func.HttpRequest) -> func.HttpResponse:
    tasks = services().tasks
    if req.method == "GET":
        return json_response({"tasks": [_task_json(t) for t in tasks.all()]})
    body = json_body(req, MAX_BUILD_BYTES)  # may carry the context directory's archive
    archive = _context_archive(body)
    task = tasks.create(Task(name=body.get("name", ""), **_task_fields(body, partial=False)),
                        context_archive=archive)
    logging.info("task %s created with %d base image(s)", task.name, len(task.dependencies))
    return _task_response(task, 201)


@bp.function_name("api_task")
@bp.route(route="tasks/{name}", methods=["GET", "PATCH", "DELETE"], auth_level=func.AuthLevel.FUNCTION)
@api_handler
def api_task(req: func.HttpRequest) -> func.HttpResponse:
    name = check_name(req.route_params["name"])  # before any storage call: `a/b` is no key
    tasks = services().tasks
    if req.method == "GET":
        task = tasks.get(name)
        if task.etag and none_match(req, task.etag):  # the client has this version already
            return func.HttpResponse(status_code=304, headers={"ETag": entity_tag(task.etag)})
        return _task_response(task)
    expected = if_match(req)  # a malformed header is a 400 before anything is read
    if req.method == "DELETE":
        tasks.delete(name, expected=expected)
        return func.HttpResponse(status_code=204)
    body = json_body(req, MAX_BUILD_BYTES)
    if "name" in body and body["name"] != name:
        raise BadRequest("a task cannot be renamed")
    archive = _context_archive(body)
    schedule = body.pop("schedule", None)
    fields = _task_fields(body, partial=True)
    task = tasks.update(name, context_archive=archive, expected=expected, **fields) if fields or archive \
        else tasks.get(name)
    if schedule is not None:  # `--schedule`: the task's default timer, added or rescheduled
        if not isinstance(schedule, str):
            raise BadRequest("schedule must be a cron expression such as '0 21 * * *'")
        task = services().task_timers.set_schedule(name, schedule)
    return _task_response(task)


@bp.function_name("api_task_runs")
@bp.route(route="tasks/{name}/runs", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@api_handler
def api_task_runs(req: func.HttpRequest) -> func.HttpResponse:
    body = json_body(req, MAX_JSON_BYTES)
    force = body.get("force", False)
    if not isinstance(force, bool):
        raise BadRequest("force must be true or false")
    run = services().scheduler.run_task(check_name(req.route_params["name"]), force=force)
    return json_response(run.to_dict(), 202)


# ---- quick builds ----------------------------------------------------------------------------
@bp.function_name("api_builds")
@bp.route(route="builds", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@api_handler
def api_builds(req: func.HttpRequest) -> func.HttpResponse:
    body = json_body(req, MAX_BUILD_BYTES)
    images, context = body.get("images"), body.get("context")
    if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
        raise BadRequest("images must be a list of image names")
    if not isinstance(context, str) or not context:
        raise BadRequest("context must be a base64-encoded .tar.gz of the build context")
    dockerfile, platform = body.get("dockerfile") or "Dockerfile", body.get("platform") or "linux"
    if not isinstance(dockerfile, str) or not isinstance(platform, str):
        raise BadRequest("dockerfile and platform must be strings")
    run = services().scheduler.quick_build(
        images, context, dockerfile=dockerfile,
        build_args=_str_map(body.get("build_args"), "build_args"), platform=platform,
    )
    return json_response(run.to_dict(), 202)


# ---- runs ------------------------------------------------------------------------------------
@bp.function_name("api_runs")
@bp.route(route="runs", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@api_handler
def api_runs(req: func.HttpRequest) -> func.HttpResponse:
    status_text = req.params.get("status") or None
    if status_text and status_text not in names(RunStatus):
        raise BadRequest(f"status must be one of {', '.join(names(RunStatus))}")
    status = RunStatus(status_text) if status_text else None
    image = req.params.get("image") or None
    if image:
        try:
            image = qualify(image, services().settings.registry)
        except ValueError as exc:
            raise BadRequest(f"image: {exc}") from exc
    task = req.params.get("task") or None  # checked as a name before it reaches a table query
    after = req.params.get("continuation") or None
    if after:
        try:
            services().runs.ids.counter(after)
        except RunNotFound as exc:
            raise BadRequest(f"continuation {after!r} is not a run id from a previous page") from exc
    runs, continuation = services().lifecycle.reads.newest(
        top=int_param(req, "top", 15, 1, 1000), task=check_name(task) if task else None,
        status=status, image=image, after=after,
    )
    return json_response({"runs": [r.to_dict() for r in runs], "continuation": continuation})


@bp.function_name("api_run")
@bp.route(route="runs/{run_id}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@api_handler
def api_run(req: func.HttpRequest) -> func.HttpResponse:
    run, _ = services().lifecycle.reads.get(req.route_params["run_id"])
    return json_response(run.to_dict())


@bp.function_name("api_run_log")
@bp.route(route="runs/{run_id}/log", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@api_handler
def api_run_log(req: func.HttpRequest) -> func.HttpResponse:
    run, _ = services().runs.get(req.route_params["run_id"])
    offset = int_param(req, "offset", 0, 0, 2**40)
    data = services().logs.read(run.run_id, offset)
    return func.HttpResponse(
        data, mimetype="text/plain", charset="utf-8",
        headers={"x-log-offset": str(offset + len(data)), "x-run-status": run.status},
    )


@bp.function_name("api_run_cancel")
@bp.route(route="runs/{run_id}/cancel", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@api_handler
def api_run_cancel(req: func.HttpRequest) -> func.HttpResponse:
    return json_response(services().scheduler.cancel(req.route_params["run_id"]).to_dict())


# ---- decisions -------------------------------------------------------------------------------
@bp.function_name("api_decisions")
@bp.route(route="decisions", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@api_handler
def api_decisions(req: func.HttpRequest) -> func.HttpResponse:
    found = services().decisions.recent(top=int_param(req, "top", 20, 1, 500),
                                        image=req.params.get("image") or None)
    return json_response({"decisions": [x.to_dict() for x in found]})
