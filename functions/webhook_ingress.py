"""HTTP ingress for any registry's webhook: the CNCF distribution notification envelope."""

import json
import logging

import azure.functions as func

from functions.http import error, json_response
from shared.events import Ignored, MalformedEvent, from_distribution_envelope
from shared.services import services

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
        events = from_distribution_envelope(json.loads(body))
    except (ValueError, MalformedEvent) as exc:
        reason = str(exc) if isinstance(exc, MalformedEvent) else f"the body is not JSON: {exc}"
        logging.warning("rejected distribution envelope: %s", reason)
        services().dispatcher.reject("(envelope)", "distribution", reason)
        return error(400, "MalformedEvent", reason)

    results, failures = [], 0
    for event in events:
        if isinstance(event, Ignored):
            # A push of one image sends an event per layer, and every pull sends one too: answered,
            # not stored (Event Grid's ignored events are stored; they are rare).
            results.append({"event_id": event.event_id, "outcome": "ignored", "reason": event.reason,
                            "runs": []})
            continue
        try:
            decision = services().dispatcher.handle(event)
            results.append({"event_id": decision.event_id, "outcome": decision.outcome,
                            "reason": decision.reason, "runs": decision.runs})
        except Exception:
            # Keep going: the other events must not be lost. The 500 below makes the registry
            # redeliver the envelope; the events already handled are recognised by their ids.
            logging.exception("dispatch of event %s failed", event.event_id)
            failures += 1
    if failures:
        return error(500, "DispatchFailed", f"{failures} event(s) could not be dispatched; retry")
    return json_response({"decisions": results})
