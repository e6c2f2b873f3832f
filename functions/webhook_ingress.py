"""HTTP ingress for any registry's webhook: the CNCF distribution notification envelope."""

import azure.functions as func

from functions.webhook_common import Refused, decisions_answer, parse_payload
from shared.bootstrap import services
from shared.domain.events import from_distribution_envelope
from shared.domain.vocabulary import EventSource

bp = func.Blueprint()

# Envelopes carry a few events (the registry batches up to its threshold); 1 MiB is generous.
MAX_BODY_BYTES = 1024 * 1024


@bp.function_name("distribution_webhook")
@bp.route(route="hooks/distribution", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def distribution_webhook(req: func.HttpRequest) -> func.HttpResponse:
    try:
        events = parse_payload(req, MAX_BODY_BYTES, from_distribution_envelope, EventSource.DISTRIBUTION,
                               rejected_id="(envelope)")
    except Refused as refused:
        return refused.answer
    # Through ingest: a pushed manifest list's platforms are read before dispatch. A dispatch that
    # could not complete answers 503: the registry delivers the envelope again (on any non-2xx).
    return decisions_answer(lambda: services().ingest.handle_all(events))
