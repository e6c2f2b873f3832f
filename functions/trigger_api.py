"""HTTP API of a task's timers (`task timer add|list|update|remove`), under /api/tasks/{name}/timers.

Thin: parses, calls shared.service_layer.task_timers, maps errors as the rest of the API does.
"""

from __future__ import annotations

import azure.functions as func

from functions.api import _task_response
from functions.bodies import TimerInput
from functions.http import MAX_JSON_BYTES, BadRequest, api_handler, json_response, read_body
from shared.bootstrap import services
from shared.domain.tasks import check_name

bp = func.Blueprint()


def _new_timer(body: TimerInput) -> TimerInput:
    """A timer to add names itself and its schedule (on PATCH both are optional)."""
    missing = [field for field in ("name", "schedule") if field not in body.model_fields_set]
    if missing:
        raise BadRequest(f"missing field(s): {', '.join(missing)}")
    return body


@bp.function_name("api_task_timers")
@bp.route(route="tasks/{name}/timers", methods=["GET", "POST"], auth_level=func.AuthLevel.FUNCTION)
@api_handler
def api_task_timers(req: func.HttpRequest) -> func.HttpResponse:
    name = check_name(req.route_params["name"])
    timers = services().task_timers
    if req.method == "GET":
        return json_response({"timers": [t.to_dict() for t in timers.of(name)]})
    body = _new_timer(read_body(req, TimerInput, MAX_JSON_BYTES))
    task = timers.add(name, body.name, body.schedule, body.enabled)
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
    changes = read_body(req, TimerInput, MAX_JSON_BYTES).given()
    changes.pop("name", None)  # a timer keeps its name
    return _task_response(timers.update(name, timer, **changes))
