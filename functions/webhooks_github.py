"""GitHub webhooks (`POST /api/hooks/github`): GitHub Packages' `registry_package` and `package`
events, and a repository's `push` and `pull_request` events (source triggers, functions/source_hooks.py).

GitHub signs the body with the webhook's secret (`X-Hub-Signature-256: sha256=<HMAC-SHA256>`): the
route is anonymous to the Functions host and checks that signature with
BASETRIGGER_GITHUB_WEBHOOK_SECRET instead (constant time). Without the setting it accepts nothing.
"""

import hashlib
import hmac

import azure.functions as func

from functions import source_hooks
from functions.http import MAX_WEBHOOK_BYTES, error
from functions.webhook_common import Refused, decisions_answer, payload_json, refuse
from shared.adapters.ingress.github import from_github
from shared.bootstrap import services
from shared.domain.events import Rejected, printable_id
from shared.domain.vocabulary import EventSource

bp = func.Blueprint()


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
    if len(body) > MAX_WEBHOOK_BYTES:  # before the HMAC is computed over it
        return error(413, "PayloadTooLarge", f"the payload exceeds {MAX_WEBHOOK_BYTES} bytes")
    if not signature_ok(secret, body, req.headers.get("X-Hub-Signature-256")):
        return error(401, "Unauthorized", "X-Hub-Signature-256 does not match the body and the secret")
    kind, delivery = req.headers.get("X-GitHub-Event"), req.headers.get("X-GitHub-Delivery")
    if kind in source_hooks.GITHUB_SOURCE_EVENTS:  # a repository's push / pull_request: a source trigger
        return source_hooks.github_source(req, kind, delivery)
    try:
        data = payload_json(req, EventSource.GITHUB, printable_id(delivery or "(github payload)"))
    except Refused as refused:
        return refused.answer
    event = from_github(kind, delivery, data)
    if isinstance(event, Rejected):
        return refuse(event)
    return decisions_answer(lambda: services().ingest.receive([event]))
