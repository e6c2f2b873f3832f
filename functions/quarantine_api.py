"""HTTP API for quarantined base digests (see docs/api.md; shared.domain.quarantine):

    GET  /api/bases/quarantine     every quarantined digest, newest first
    POST /api/bases/quarantine     {"image": "IMAGE@DIGEST", "reason", "rollback"?}: nothing builds on
                                   it any more; with "rollback": true, the tags rebuilt on it go back
                                   to their earlier images (shared.service_layer.rollback)
    POST /api/bases/release        {"image": "IMAGE@DIGEST"}: lift it
"""

from __future__ import annotations

import azure.functions as func

from functions.bodies import QuarantineRequest, ReleaseRequest
from functions.http import MAX_JSON_BYTES, api_handler, json_response, read_body
from shared.bootstrap import services

bp = func.Blueprint()


@bp.function_name("api_quarantine")
@bp.route(route="bases/quarantine", methods=["GET", "POST"], auth_level=func.AuthLevel.FUNCTION)
@api_handler
def api_quarantine(req: func.HttpRequest) -> func.HttpResponse:
    quarantine = services().quarantine
    if req.method == "GET":
        return json_response({"quarantine": [e.to_dict() for e in quarantine.entries()]})
    body = read_body(req, QuarantineRequest, MAX_JSON_BYTES)
    entry = quarantine.add(body.image, body.reason)
    answer = entry.to_dict()
    if body.rollback:  # after the quarantine: nothing new is built on the digest while tags move back
        answer["rollback"] = services().rollback.roll_back(entry).to_dict()
    return json_response(answer, 201)


@bp.function_name("api_quarantine_release")
@bp.route(route="bases/release", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@api_handler
def api_quarantine_release(req: func.HttpRequest) -> func.HttpResponse:
    body = read_body(req, ReleaseRequest, MAX_JSON_BYTES)
    return json_response(services().quarantine.release(body.image).to_dict())
