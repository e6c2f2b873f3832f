"""GitHub Packages webhooks (`POST /api/hooks/github`): `registry_package` and `package` events.

GitHub signs the body with the webhook's secret (`X-Hub-Signature-256: sha256=<HMAC-SHA256>`): the
route is anonymous to the Functions host and checks that signature with
BASETRIGGER_GITHUB_WEBHOOK_SECRET instead (constant time). Without the setting it accepts nothing.
"""

import hashlib
import hmac
import logging

import azure.functions as func

from functions.http import BadRequest, error, json_response, parse_json
from shared.bootstrap import services
from shared.domain.events import MalformedEvent, printable_id
from shared.domain.vocabulary import EventSource
from shared.domain.webhook_events import from_github
from shared.service_layer.dispatch import DispatchIncomplete

bp = func.Blueprint()

MAX_BODY_BYTES = 1024 * 1024


def signature_ok(secret: str, body: bytes, header: str | None) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return bool(header) and hmac.compare_digest(expected.encode(), (header or "").encode())


@bp.function_name("github_webhook")
@bp.route(route="hooks/github", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def github_webhook(req: func.HttpRequest) -> func.HttpResponse:
    secret = services().settings.github_webhook_secret
    if not secret:
        return error(403, "NotConfigured",
                     "BASETRIGGER_GITHUB_WEBHOOK_SECRET is not set: this route accepts nothing")
    body = req.get_body()
    if len(body) > MAX_BODY_BYTES:
        return error(413, "PayloadTooLarge", f"the payload exceeds {MAX_BODY_BYTES} bytes")
    if not signature_ok(secret, body, req.headers.get("X-Hub-Signature-256")):
        return error(401, "Unauthorized", "X-Hub-Signature-256 does not match the body and the secret")
    delivery = req.headers.get("X-GitHub-Delivery")
    try:
        event = from_github(req.headers.get("X-GitHub-Event"), delivery, parse_json(body))
    except (BadRequest, MalformedEvent) as exc:
        logging.warning("rejected GitHub payload: %s", exc)
        services().dispatcher.reject(printable_id(delivery or "(github payload)"), EventSource.GITHUB,
                                     str(exc))
        return error(400, "MalformedEvent", str(exc))
    try:
        decisions = services().ingest.handle_all([event])
    except DispatchIncomplete as exc:
        return error(503, "DispatchFailed", str(exc), headers={"Retry-After": "10"})
    return json_response({"decisions": [
        {"event_id": d.event_id, "outcome": d.outcome, "reason": d.reason, "runs": d.runs}
        for d in decisions]})
