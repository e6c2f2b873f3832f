"""HTTP ingress for any registry's webhook: the CNCF distribution notification envelope."""

import logging

import azure.functions as func

from functions.http import BadRequest, error, json_response, parse_json
from shared.bootstrap import services
from shared.domain.events import MalformedEvent, from_distribution_envelope
from shared.domain.vocabulary import EventSource
from shared.service_layer.dispatch import DispatchIncomplete

bp = func.Blueprint()

# Envelopes carry a few events (the registry batches up to its threshold); 1 MiB is generous.
MAX_BODY_BYTES = 1024 * 1024


@bp.function_name("distribution_webhook")
@bp.route(route="hooks/distribution", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def distribution_webhook(req: func.HttpRequest) -> func.HttpResponse:
    body = req.get_body()
    if len(body) > MAX_BODY_BYTES:
        return error(413, "PayloadTooLarge", f"the envelope exceeds {MAX_BODY_BYTES} bytes")
    try:
        events = from_distribution_envelope(parse_json(body))
    except (BadRequest, MalformedEvent) as exc:
        reason = str(exc)
        logging.warning("rejected distribution envelope: %s", reason)
        services().dispatcher.reject("(envelope)", EventSource.DISTRIBUTION, reason)
        return error(400, "MalformedEvent", reason)
    try:
        # Through ingest: a pushed manifest list's platforms are read before dispatch.
        decisions = services().ingest.handle_all(events)
    except DispatchIncomplete as exc:
        # The registry delivers the envelope again; events already handled keep their decisions.
        return error(500, "DispatchFailed", str(exc))
    return json_response({"decisions": [
        {"event_id": d.event_id, "outcome": d.outcome, "reason": d.reason, "runs": d.runs}
        for d in decisions]})
