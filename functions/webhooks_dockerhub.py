"""Docker Hub's repository webhooks (`POST /api/hooks/dockerhub?code=<function key>`).

Docker Hub signs nothing and sends no header of ours, so the function key rides in the URL it is
given (`?code=`). Its payload names a tag but no digest: the digest is read from Docker Hub before
dispatch (shared/service_layer/ingest.py). Docker Hub bases are also polled by default, so a push
whose digest cannot be read now is still seen by the next poll.
"""

import logging

import azure.functions as func

from functions.http import BadRequest, error, json_response, parse_json
from shared.bootstrap import services
from shared.domain.events import MalformedEvent
from shared.domain.vocabulary import EventSource
from shared.domain.webhook_events import from_dockerhub

bp = func.Blueprint()

MAX_BODY_BYTES = 256 * 1024


@bp.function_name("dockerhub_webhook")
@bp.route(route="hooks/dockerhub", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def dockerhub_webhook(req: func.HttpRequest) -> func.HttpResponse:
    body = req.get_body()
    if len(body) > MAX_BODY_BYTES:
        return error(413, "PayloadTooLarge", f"the payload exceeds {MAX_BODY_BYTES} bytes")
    try:
        push = from_dockerhub(parse_json(body))
    except (BadRequest, MalformedEvent) as exc:
        logging.warning("rejected Docker Hub payload: %s", exc)
        services().dispatcher.reject("(dockerhub payload)", EventSource.DOCKERHUB, str(exc))
        return error(400, "MalformedEvent", str(exc))
    decision = services().ingest.dockerhub(push)
    return json_response({"decisions": [{"event_id": decision.event_id, "outcome": decision.outcome,
                                         "reason": decision.reason, "runs": decision.runs}]})
