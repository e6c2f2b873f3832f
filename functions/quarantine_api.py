"""HTTP API for quarantined base digests (see docs/api.md; shared.domain.quarantine):

    GET  /api/bases/quarantine     every quarantined digest, newest first
    POST /api/bases/quarantine     {"image": "IMAGE@DIGEST", "reason", "rollback"?}: nothing builds on
                                   it any more; with "rollback": true, the tags rebuilt on it go back
                                   to their earlier images (shared.service_layer.rollback)
    POST /api/bases/release        {"image": "IMAGE@DIGEST"}: lift it
"""

from __future__ import annotations

import azure.functions as func

from functions.api import MAX_JSON_BYTES, api_handler
from functions.http import BadRequest, json_body, json_response
from shared.bootstrap import services

bp = func.Blueprint()


def _fields(req: func.HttpRequest, allowed: set[str]) -> dict:
    body = json_body(req, MAX_JSON_BYTES)
    unknown = set(body) - allowed
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
    return body


@bp.function_name("api_quarantine")
@bp.route(route="bases/quarantine", methods=["GET", "POST"], auth_level=func.AuthLevel.FUNCTION)
@api_handler
def api_quarantine(req: func.HttpRequest) -> func.HttpResponse:
    quarantine = services().quarantine
    if req.method == "GET":
        return json_response({"quarantine": [e.to_dict() for e in quarantine.entries()]})
    body = _fields(req, {"image", "reason", "rollback"})
    rollback = body.get("rollback", False)
    if not isinstance(rollback, bool):
        raise BadRequest("rollback must be true or false")
    entry = quarantine.add(body.get("image"), body.get("reason"))
    answer = entry.to_dict()
    if rollback:  # after the quarantine: nothing new is built on the digest while tags move back
        answer["rollback"] = services().rollback.roll_back(entry).to_dict()
    return json_response(answer, 201)


@bp.function_name("api_quarantine_release")
@bp.route(route="bases/release", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@api_handler
def api_quarantine_release(req: func.HttpRequest) -> func.HttpResponse:
    body = _fields(req, {"image"})
    return json_response(services().quarantine.release(body.get("image")).to_dict())
