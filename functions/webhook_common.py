"""What every registry and git webhook route does around its own parser (shared/adapters/ingress/):
refuse oversized bodies, hand a payload that cannot be read to `receive` (recorded as a `rejected`
decision, answered 400, never dispatched), and answer with the decisions taken (or ask the sender
to deliver again when dispatch could not complete)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import azure.functions as func

from functions.http import (
    MAX_WEBHOOK_BYTES,
    RETRY_AFTER_SECONDS,
    BadRequest,
    error,
    json_response,
    parse_json,
)
from shared.bootstrap import services
from shared.domain.decisions import Decision, EventBusy
from shared.domain.events import Rejected
from shared.domain.vocabulary import EventSource
from shared.service_layer.dispatch import DispatchIncomplete


class Refused(Exception):
    """The payload was answered already (too large, or not JSON and recorded)."""

    def __init__(self, answer: func.HttpResponse):
        super().__init__(answer.status_code)
        self.answer = answer


def payload_json(req: func.HttpRequest, source: EventSource, rejected_id: str) -> Any:
    """The body's JSON, for the sender's parser; Refused (with its answer) when the body is too large
    (413) or is not JSON (recorded as rejected under `rejected_id`, 400)."""
    body = req.get_body()
    if len(body) > MAX_WEBHOOK_BYTES:
        raise Refused(error(413, "PayloadTooLarge", f"the payload exceeds {MAX_WEBHOOK_BYTES} bytes"))
    try:
        return parse_json(body)
    except BadRequest as exc:
        raise Refused(refuse(Rejected(rejected_id, str(exc), source))) from exc


def refuse(rejected: Rejected) -> func.HttpResponse:
    """Record a payload that cannot be read (through receive) and answer 400; 503 when it could not
    be recorded (storage trouble: the sender delivers again)."""
    logging.warning("rejected %s payload: %s", rejected.source, rejected.reason)
    failed = decisions_answer(lambda: services().ingest.receive([rejected]))
    return failed if failed.status_code >= 500 else error(400, "MalformedEvent", rejected.reason)



def decisions_answer(dispatch: Callable[[], list[Decision]]) -> func.HttpResponse:
    """Dispatch and answer with the decisions. When some events could not be dispatched (storage
    trouble, or the same push being dispatched by another delivery right now), 503 with Retry-After
    asks the sender to deliver again (every registry retries on any non-2xx); handled events keep
    their decisions."""
    try:
        decisions = dispatch()
    except (DispatchIncomplete, EventBusy) as exc:  # EventBusy: the same push, dispatched right now
        return error(503, "DispatchFailed", str(exc), headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    return json_response({"decisions": [
        {"event_id": d.event_id, "outcome": d.outcome, "reason": d.reason, "runs": d.runs}
        for d in decisions]})
