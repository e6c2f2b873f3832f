"""HTTP API for bases and registry credentials (see docs/api.md):

    GET    /api/bases                         every base in use: how it is watched, what the poller saw
    GET    /api/bases/changes?image=…[&from=…][&to=…]  what changed between two digests of a base
    POST   /api/bases/poll                    one poll cycle now (the timer runs one every interval)
    GET    /api/bases/settling                bases within their settle window, and when each starts
    POST   /api/bases/settling                dispatch the bases still for their window now (housekeeping
                                              does it every minute)
    GET    /api/tasks/{name}/credentials      a task's registry credentials (never a password)
    POST   /api/tasks/{name}/credentials      add one: login_server, username + password or use_identity
    PATCH  /api/tasks/{name}/credentials      change one (login_server names it)
    DELETE /api/tasks/{name}/credentials?login_server=…
"""

from __future__ import annotations

import azure.functions as func

from functions.bodies import CredentialInput
from functions.http import MAX_JSON_BYTES, BadRequest, api_handler, error, json_response, read_body
from shared.bootstrap import services
from shared.domain.credentials import RegistryCredential
from shared.domain.events import MalformedEvent, check_digest
from shared.domain.image_ref import ImageRef, InvalidReference
from shared.domain.tasks import Task, check_name
from shared.domain.vocabulary import format_time
from shared.service_layer.base_changes import ChangesUnavailable, ImageNotFound, NoPreviousDigest

bp = func.Blueprint()


def _credentials_answer(task: Task) -> func.HttpResponse:
    return json_response({"task": task.name, "credentials": [c.public_dict() for c in task.credentials]})


@bp.function_name("api_bases")
@bp.route(route="bases", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@api_handler
def api_bases(req: func.HttpRequest) -> func.HttpResponse:
    svc = services()
    return json_response({"interval_seconds": svc.settings.polling.interval_seconds,
                          "bases": [b.to_dict() for b in svc.poller.overview()]})


@bp.function_name("api_base_changes")
@bp.route(route="bases/changes", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@api_handler
def api_base_changes(req: func.HttpRequest) -> func.HttpResponse:
    image = req.params.get("image")
    if not image:
        raise BadRequest("image is required (?image=localhost:5000/baseimages/node:9-alpine)")
    try:
        ref = ImageRef.parse(image)
        old, new = (check_digest(req.params[k]) if req.params.get(k) else None for k in ("from", "to"))
    except (InvalidReference, MalformedEvent) as exc:
        raise BadRequest(str(exc)) from exc
    if ref.digest:
        raise BadRequest("name the base by its tag; give digests as from and to")
    try:
        change = services().base_changes.compare(str(ref), old, new)
    except NoPreviousDigest as exc:
        raise BadRequest(str(exc)) from exc
    except ImageNotFound as exc:
        return error(404, "ImageNotFound", str(exc))
    except ChangesUnavailable as exc:
        # Mostly a name the caller got wrong (host, credentials of no task): a 4xx that says why.
        return error(422, "RegistryUnreadable", str(exc))
    return json_response(change.to_dict())


@bp.function_name("api_bases_poll")
@bp.route(route="bases/poll", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@api_handler
def api_bases_poll(req: func.HttpRequest) -> func.HttpResponse:
    return json_response(services().poller.cycle().to_dict())


@bp.function_name("api_bases_settling")
@bp.route(route="bases/settling", methods=["GET", "POST"], auth_level=func.AuthLevel.FUNCTION)
@api_handler
def api_bases_settling(req: func.HttpRequest) -> func.HttpResponse:
    svc = services()
    if req.method == "POST":
        return json_response({"dispatched": [d.to_dict() for d in svc.dispatcher.release_settled()]})
    return json_response({"bases": [{"image": s.reference, "digest": s.digest,
                                     "moved_at": format_time(s.moved_at), "starts_at": format_time(due),
                                     "deliveries": s.deliveries}
                                    for s, due in svc.settling.pending()]})


@bp.function_name("api_task_credentials")
@bp.route(route="tasks/{name}/credentials", methods=["GET", "POST", "PATCH", "DELETE"],
          auth_level=func.AuthLevel.FUNCTION)
@api_handler
def api_task_credentials(req: func.HttpRequest) -> func.HttpResponse:
    name = check_name(req.route_params["name"])
    credentials = services().credentials
    if req.method == "GET":
        return _credentials_answer(services().tasks.get(name))
    if req.method == "DELETE":
        server = req.params.get("login_server")
        if not server:
            raise BadRequest("login_server is required (?login_server=HOST)")
        return _credentials_answer(credentials.remove(name, server))
    body = read_body(req, CredentialInput, MAX_JSON_BYTES)
    password = body.password.get_secret_value() if body.password is not None else None
    if req.method == "POST":
        credential = RegistryCredential.create(body.login_server, body.username, password,
                                               bool(body.use_identity))
        return _credentials_answer(credentials.add(name, credential))
    return _credentials_answer(credentials.update(name, body.login_server, body.username, password,
                                                  body.use_identity))
