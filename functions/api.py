"""HTTP API under /api: tasks, runs, logs, quick builds, decisions (see docs/api.md).

Each handler reads its body into its model (functions/bodies.py), calls shared/, and answers;
the `api_handler` decorator (functions/http.py) maps domain errors to status codes once for all.

A task's answers carry its version as an ETag (also in the body, as `etag`); PATCH and DELETE
honour If-Match (412 when the task changed since), GET honours If-None-Match (304).
"""

from __future__ import annotations

import logging
from typing import Any

import azure.functions as func

from functions.bodies import QuickBuild, RunRequest, TaskCreate, TaskFields, TaskUpdate
from functions.http import (
    MAX_JSON_BYTES,
    BadRequest,
    api_handler,
    entity_tag,
    if_match,
    int_param,
    json_response,
    none_match,
    read_body,
)
from functions.openapi import openapi_document
from shared.bootstrap import services
from shared.domain.images import qualify
from shared.domain.tasks import Task, check_name
from shared.domain.timers import DEFAULT_TIMER, TaskTimer
from shared.domain.vocabulary import RunStatus, names
from shared.service_layer.scheduling import MAX_CONTEXT_BYTES

bp = func.Blueprint()


# A base64 context is 4/3 of the archive, plus the small JSON around it.
MAX_BUILD_BYTES = MAX_CONTEXT_BYTES * 4 // 3 + MAX_JSON_BYTES

# The API's field names that are not Task's attribute names.
_TASK_ATTRIBUTES = {"git_access_token": "git_token", "base_image_trigger_enabled": "trigger_enabled",
                    "base_image_trigger_type": "trigger_type"}
# Fields that are no Task attribute: the route handles them itself.
_NOT_ATTRIBUTES = {"name", "context_archive", "schedule"}


def _task_fields(body: TaskFields) -> dict[str, Any]:
    """The Task attributes the body sets: only the fields sent (a PATCH changes only those)."""
    fields = {_TASK_ATTRIBUTES.get(key, key): value for key, value in body.given().items()
              if key not in _NOT_ATTRIBUTES}
    if fields.get("update_trigger_endpoint") == "":
        fields["update_trigger_endpoint"] = None
    if "update_trigger_endpoint" in fields and fields["update_trigger_endpoint"] is None:
        fields.setdefault("update_trigger_secret", None)  # no endpoint, nothing to sign
    return fields


def _context_archive(body: TaskFields) -> str | None:
    """The base64 .tar.gz of a directory context, when the body carries one."""
    return body.context_archive if "context_archive" in body.model_fields_set else None


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
    body = read_body(req, TaskCreate, MAX_BUILD_BYTES)  # may carry the context directory's archive
    timers = [TaskTimer(name=DEFAULT_TIMER, schedule=body.schedule)] if "schedule" in body.model_fields_set \
        else []
    task = tasks.create(Task(name=body.name, timers=timers, **_task_fields(body)),
                        context_archive=_context_archive(body))
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
    body = read_body(req, TaskUpdate, MAX_BUILD_BYTES)
    if "name" in body.model_fields_set and body.name != name:
        raise BadRequest("a task cannot be renamed")
    archive, fields = _context_archive(body), _task_fields(body)
    task = tasks.update(name, context_archive=archive, expected=expected, **fields) if fields or archive \
        else tasks.get(name)
    if "schedule" in body.model_fields_set:  # `--schedule`: the task's default timer, added or rescheduled
        task = services().task_timers.set_schedule(name, body.schedule)
    return _task_response(task)


@bp.function_name("api_task_runs")
@bp.route(route="tasks/{name}/runs", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@api_handler
def api_task_runs(req: func.HttpRequest) -> func.HttpResponse:
    body = read_body(req, RunRequest, MAX_JSON_BYTES)
    run = services().scheduler.run_task(check_name(req.route_params["name"]), force=body.force)
    return json_response(run.to_dict(), 202)


# ---- quick builds ----------------------------------------------------------------------------
@bp.function_name("api_builds")
@bp.route(route="builds", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@api_handler
def api_builds(req: func.HttpRequest) -> func.HttpResponse:
    body = read_body(req, QuickBuild, MAX_BUILD_BYTES)
    run = services().scheduler.quick_build(
        body.images, body.context, dockerfile=body.dockerfile or "Dockerfile", build_args=body.build_args,
        platform=body.platform or "linux",
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
            image = qualify(image, services().settings.registry_host)
        except ValueError as exc:
            raise BadRequest(f"image: {exc}") from exc
    task = req.params.get("task") or None  # checked as a name before it reaches a table query
    runs, continuation = services().scheduler.newest(
        top=int_param(req, "top", 15, 1, 1000), task=check_name(task) if task else None,
        status=status, image=image, after=req.params.get("continuation") or None,
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
