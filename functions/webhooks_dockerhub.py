"""Docker Hub's repository webhooks (`POST /api/hooks/dockerhub?code=<function key>`).

Docker Hub signs nothing and sends no header of ours, so the function key rides in the URL it is
given (`?code=`). Its payload names a tag but no digest: the digest is read from Docker Hub before
dispatch (shared/service_layer/ingest.py, `receive`). Docker Hub bases are also polled by default, so a push
whose digest cannot be read now is still seen by the next poll.
"""

import azure.functions as func

from functions.webhook_common import Refused, decisions_answer, payload_json, refuse
from shared.adapters.ingress.dockerhub import PAYLOAD_ID, from_dockerhub
from shared.bootstrap import services
from shared.domain.events import Rejected
from shared.domain.vocabulary import EventSource

bp = func.Blueprint()


@bp.function_name("dockerhub_webhook")
@bp.route(route="hooks/dockerhub", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def dockerhub_webhook(req: func.HttpRequest) -> func.HttpResponse:
    try:
        data = payload_json(req, EventSource.DOCKERHUB, PAYLOAD_ID)
    except Refused as refused:
        return refused.answer
    push = from_dockerhub(data)
    if isinstance(push, Rejected):
        return refuse(push)
    return decisions_answer(lambda: services().ingest.receive([push]))
