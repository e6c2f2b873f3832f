"""HTTP API for the questions a platform team asks (see docs/api.md):

    GET /api/bases/{ref}/impact     if this base changed, what would rebuild, level by level?
    GET /api/graph                  every task and the images it is built FROM (the dashboard's picture)
    GET /api/stale                  which tasks built on a base digest that is no longer current, and why
    GET /api/tasks/{name}/decisions why did (or didn't) this task rebuild?

Thin: each handler parses its input and calls a service of shared/service_layer.
"""

from __future__ import annotations

from urllib.parse import unquote

import azure.functions as func

from functions.http import BadRequest, api_handler, int_param, json_response
from shared.bootstrap import services
from shared.domain.image_ref import InvalidReference
from shared.domain.tasks import check_name
from shared.service_layer.impact import graph_to_dict

bp = func.Blueprint()


def image_param(raw: str) -> str:
    """The `{ref}` route value as an image reference.

    A reference has `/` in it, so clients send it percent-encoded (`localhost%3A5000%2Fnode%3A9`).
    devhost decodes route values; ASP.NET Core (the Functions host in Azure) leaves an encoded `/`
    encoded in route values. A reference never contains `%`, so decoding what is left is safe.
    """
    return unquote(raw) if "%" in raw else raw


@bp.function_name("api_base_impact")
@bp.route(route="bases/{ref}/impact", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@api_handler
def api_base_impact(req: func.HttpRequest) -> func.HttpResponse:
    try:
        impact = services().impact.impact(image_param(req.route_params["ref"]))
    except InvalidReference as exc:
        raise BadRequest(str(exc)) from exc
    return json_response(impact.to_dict())


@bp.function_name("api_graph")
@bp.route(route="graph", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@api_handler
def api_graph(req: func.HttpRequest) -> func.HttpResponse:
    return json_response(graph_to_dict(services().impact.graph()))


@bp.function_name("api_stale")
@bp.route(route="stale", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@api_handler
def api_stale(req: func.HttpRequest) -> func.HttpResponse:
    entries, checked = services().staleness.report()
    return json_response({"stale": [e.to_dict() for e in entries], "checked": checked})


@bp.function_name("api_task_decisions")
@bp.route(route="tasks/{name}/decisions", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@api_handler
def api_task_decisions(req: func.HttpRequest) -> func.HttpResponse:
    name = check_name(req.route_params["name"])  # before any storage call: `a/b` is no key
    verdicts = services().history.why(name, top=int_param(req, "top", 20, 1, 200))
    return json_response({"task": name, "decisions": [v.to_dict() for v in verdicts]})
