"""Harbor's webhooks (`POST /api/hooks/harbor`), Default or CloudEvents payload.

Harbor's webhook policy sends its "Auth Header" value as the `Authorization` header: the route is
anonymous to the Functions host and compares that header with BASETRIGGER_HARBOR_AUTH instead
(constant time). Without the setting the route accepts nothing.
"""

import hmac

import azure.functions as func

from functions.http import error
from functions.webhook_common import Refused, decisions_answer, payload_json, refuse
from shared.adapters.ingress.harbor import PAYLOAD_ID, from_harbor
from shared.bootstrap import services
from shared.domain.events import Rejected
from shared.domain.vocabulary import EventSource

bp = func.Blueprint()


@bp.function_name("harbor_webhook")
@bp.route(route="hooks/harbor", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def harbor_webhook(req: func.HttpRequest) -> func.HttpResponse:
    expected = services().settings.harbor_auth
    if not expected:
        return error(403, "NotConfigured", "BASETRIGGER_HARBOR_AUTH is not set: this route accepts nothing")
    given = req.headers.get("Authorization") or ""
    if not hmac.compare_digest(given.encode(), expected.encode()):
        return error(401, "Unauthorized", "the Authorization header is not the webhook policy's auth header")
    try:
        data = payload_json(req, EventSource.HARBOR, PAYLOAD_ID)
    except Refused as refused:
        return refused.answer
    events = from_harbor(data)
    if isinstance(events, Rejected):
        return refuse(events)
    return decisions_answer(lambda: services().ingest.receive(events))
