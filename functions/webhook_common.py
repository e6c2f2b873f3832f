"""What every registry webhook route does around its own parser: refuse oversized bodies, record
a payload that cannot be parsed as a `rejected` decision (400, never dispatched), and answer with
the decisions taken (or ask the sender to deliver again when dispatch could not complete)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import azure.functions as func

from functions.http import BadRequest, error, json_response, parse_json
from shared.bootstrap import services
from shared.domain.decisions import Decision, EventBusy
from shared.domain.events import MalformedEvent
from shared.domain.vocabulary import EventSource
from shared.service_layer.dispatch import DispatchIncomplete

Parsed = TypeVar("Parsed")


class Refused(Exception):
    """The payload was answered already (too large, or malformed and recorded)."""

    def __init__(self, answer: func.HttpResponse):
        super().__init__(answer.status_code)
        self.answer = answer


def parse_payload(req: func.HttpRequest, max_bytes: int, parse: Callable[[object], Parsed],
                  source: EventSource, rejected_id: str = "") -> Parsed:
    """The parsed payload; Refused (with its answer) when it is too large or malformed."""
    body = req.get_body()
    if len(body) > max_bytes:
        raise Refused(error(413, "PayloadTooLarge", f"the payload exceeds {max_bytes} bytes"))
    try:
        return parse(parse_json(body))
    except (BadRequest, MalformedEvent) as exc:
        logging.warning("rejected %s payload: %s", source, exc)
        services().dispatcher.reject(rejected_id or f"({source} payload)", source, str(exc))
        raise Refused(error(400, "MalformedEvent", str(exc))) from exc


# When a sender that honours Retry-After should deliver again (a push's dispatch takes seconds).
RETRY_AFTER_SECONDS = 10


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
