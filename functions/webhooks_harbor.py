"""Harbor's webhooks (`POST /api/hooks/harbor`), Default or CloudEvents payload.

Harbor's webhook policy sends its "Auth Header" value as the `Authorization` header: the route is
anonymous to the Functions host and compares that header with BASETRIGGER_HARBOR_AUTH instead
(constant time). Without the setting the route accepts nothing.
"""

import hmac
import logging

import azure.functions as func

from functions.http import BadRequest, error, json_response, parse_json
from shared.bootstrap import services
from shared.domain.events import MalformedEvent
from shared.domain.vocabulary import EventSource
from shared.domain.webhook_events import from_harbor
from shared.service_layer.dispatch import DispatchIncomplete

bp = func.Blueprint()

MAX_BODY_BYTES = 1024 * 1024


@bp.function_name("harbor_webhook")
@bp.route(route="hooks/harbor", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def harbor_webhook(req: func.HttpRequest) -> func.HttpResponse:
    expected = services().settings.harbor_auth
    if not expected:
        return error(403, "NotConfigured", "BASETRIGGER_HARBOR_AUTH is not set: this route accepts nothing")
    given = req.headers.get("Authorization") or ""
    if not hmac.compare_digest(given.encode(), expected.encode()):
        return error(401, "Unauthorized", "the Authorization header is not the webhook policy's auth header")
    body = req.get_body()
    if len(body) > MAX_BODY_BYTES:
        return error(413, "PayloadTooLarge", f"the payload exceeds {MAX_BODY_BYTES} bytes")
    try:
        events = from_harbor(parse_json(body))
    except (BadRequest, MalformedEvent) as exc:
        logging.warning("rejected Harbor payload: %s", exc)
        services().dispatcher.reject("(harbor payload)", EventSource.HARBOR, str(exc))
        return error(400, "MalformedEvent", str(exc))
    try:
        decisions = services().ingest.handle_all(events)
    except DispatchIncomplete as exc:
        return error(503, "DispatchFailed", str(exc), headers={"Retry-After": "10"})
    return json_response({"decisions": [
        {"event_id": d.event_id, "outcome": d.outcome, "reason": d.reason, "runs": d.runs}
        for d in decisions]})
