"""HTTP API of a task's timers (`task timer add|list|update|remove`), under /api/tasks/{name}/timers.

Thin: parses, calls shared.service_layer.task_timers, maps errors as the rest of the API does.
"""

from __future__ import annotations

from typing import Any

import azure.functions as func

from functions.api import _task_response, api_handler
from functions.http import MAX_JSON_BYTES, BadRequest, json_body, json_response
from shared.bootstrap import services
from shared.domain.tasks import check_name

bp = func.Blueprint()


def _timer_fields(body: dict[str, Any], creating: bool) -> dict[str, Any]:
    unknown = set(body) - {"name", "schedule", "enabled"}
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
    if creating and not isinstance(body.get("name"), str):
        raise BadRequest("name must be the timer's name")
    if (creating or "schedule" in body) and not isinstance(body.get("schedule"), str):
        raise BadRequest("schedule must be a cron expression such as '0 21 * * *'")
    if "enabled" in body and not isinstance(body["enabled"], bool):
        raise BadRequest("enabled must be true or false")
    return {k: body[k] for k in ("schedule", "enabled") if k in body}


@bp.function_name("api_task_timers")
@bp.route(route="tasks/{name}/timers", methods=["GET", "POST"], auth_level=func.AuthLevel.FUNCTION)
@api_handler
def api_task_timers(req: func.HttpRequest) -> func.HttpResponse:
    name = check_name(req.route_params["name"])
    timers = services().task_timers
    if req.method == "GET":
        return json_response({"timers": [t.to_dict() for t in timers.of(name)]})
    body = json_body(req, MAX_JSON_BYTES)
    fields = _timer_fields(body, creating=True)
    task = timers.add(name, body["name"], fields["schedule"], fields.get("enabled", True))
    return _task_response(task, 201)


@bp.function_name("api_task_timer")
@bp.route(route="tasks/{name}/timers/{timer}", methods=["PATCH", "DELETE"],
          auth_level=func.AuthLevel.FUNCTION)
@api_handler
def api_task_timer(req: func.HttpRequest) -> func.HttpResponse:
    name, timer = check_name(req.route_params["name"]), req.route_params["timer"]
    timers = services().task_timers
    if req.method == "DELETE":
        return _task_response(timers.remove(name, timer))
    fields = _timer_fields(json_body(req, MAX_JSON_BYTES), creating=False)
    return _task_response(timers.update(name, timer, **fields))
