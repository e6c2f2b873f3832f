"""The CNCF distribution registry's notifications (`POST /api/hooks/distribution`): any registry
that sends its envelope (`{"events": [...]}`, shared/adapters/ingress/distribution.py)."""

import azure.functions as func

from functions.webhook_common import Refused, decisions_answer, payload_json, refuse
from shared.adapters.ingress.distribution import ENVELOPE_ID, from_distribution_envelope
from shared.bootstrap import services
from shared.domain.events import Rejected
from shared.domain.vocabulary import EventSource

bp = func.Blueprint()


@bp.function_name("distribution_webhook")
@bp.route(route="hooks/distribution", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def distribution_webhook(req: func.HttpRequest) -> func.HttpResponse:
    try:
        data = payload_json(req, EventSource.DISTRIBUTION, ENVELOPE_ID)
    except Refused as refused:
        return refused.answer
    events = from_distribution_envelope(data)
    if isinstance(events, Rejected):
        return refuse(events)
    # A pushed manifest list's platforms are read before dispatch. A dispatch that could not
    # complete answers 503: the registry delivers the envelope again (on any non-2xx).
    return decisions_answer(lambda: services().ingest.receive(events))
