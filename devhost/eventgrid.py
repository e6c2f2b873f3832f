"""The Event Grid webhook: `/runtime/webhooks/eventgrid?functionName=NAME`, as the host's Event Grid
extension serves it.

- Event Grid schema handshake: `aeg-event-type: SubscriptionValidation` with the validation event
  in a JSON array -> 200 `{"validationResponse": code}`.
- CloudEvents handshake: `OPTIONS` with `WebHook-Request-Origin` -> 200 `WebHook-Allowed-Origin`.
- Notifications (`aeg-event-type: Notification`, or no header as CloudEvents deliveries send): a
  JSON array of events, or one CloudEvent object; the function runs once per event with what
  `azure.functions`' own Event Grid converter builds (EventGridEvent or CloudEvent).

Status codes are what Event Grid acts on: 401 without the key, 404 for an unknown function, 400
for a body no retry can fix (Event Grid dead-letters it), 500 when an invocation failed so Event
Grid retries the delivery — after every event of the batch was still attempted — and 202 otherwise.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from azure.functions.eventgrid import EventGridEventInConverter
from azure.functions.meta import Datum

from .auth import presents_key
from .invocation import Invoker
from .loader import EVENT_GRID_TRIGGER, FunctionTable
from .web import BodyTooLarge, error_response, read_body, too_large_response

log = logging.getLogger("devhost.eventgrid")

PATH = "/runtime/webhooks/eventgrid"
EVENT_TYPE_HEADER = "aeg-event-type"
VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"


def decode_event(event: dict[str, Any]) -> Any:
    return EventGridEventInConverter.decode(Datum(json.dumps(event), "json"), trigger_metadata=None)


def _validation_code(payload: Any) -> str | None:
    first = payload[0] if isinstance(payload, list) and payload else None
    if not isinstance(first, dict) or first.get("eventType") != VALIDATION_EVENT:
        return None
    code = (first.get("data") or {}).get("validationCode")
    return code if isinstance(code, str) else None


class EventGridWebhook:
    def __init__(self, functions: FunctionTable, key: str, max_body_bytes: int, invoker: Invoker) -> None:
        self._functions = functions
        self._key = key
        self._max_body_bytes = max_body_bytes
        self._invoker = invoker

    @staticmethod
    def url_path(function_name: str) -> str:
        return f"{PATH}?functionName={function_name}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if not presents_key(request, self._key):
            return error_response(401, "the Event Grid webhook needs the key (code= or x-functions-key)")
        name = request.query.get("functionName", "")
        entry = self._functions.get(name)
        if entry is None or entry.trigger_type != EVENT_GRID_TRIGGER:
            return error_response(404, f"no Event Grid function named {name!r}")

        if request.method == "OPTIONS":
            return self._cloudevents_handshake(request)
        if request.method != "POST":
            return error_response(405, "use POST (or OPTIONS for the CloudEvents handshake)")

        try:
            payload = json.loads(await read_body(request, self._max_body_bytes))
        except BodyTooLarge:
            return too_large_response(self._max_body_bytes)
        except RecursionError:
            return error_response(400, "the body is nested too deeply")
        except ValueError as exc:
            # JSONDecodeError and UnicodeDecodeError, and the plain ValueError of a number with more
            # digits than Python turns into an int (sys.get_int_max_str_digits).
            return error_response(400, f"the body is not valid JSON: {exc}")

        event_type = request.headers.get(EVENT_TYPE_HEADER, "Notification")
        if event_type == "SubscriptionValidation":
            code = _validation_code(payload)
            if code is None:
                return error_response(400, f"expected a JSON array holding a {VALIDATION_EVENT}")
            log.info("Event Grid subscription validated for function '%s'", name)
            return web.json_response({"validationResponse": code})
        if event_type == "Unsubscribe":
            return web.Response(status=202)
        if event_type != "Notification":
            return error_response(400, f"unknown {EVENT_TYPE_HEADER}: {event_type!r}")
        return await self._notify(entry, payload)

    @staticmethod
    def _cloudevents_handshake(request: web.Request) -> web.StreamResponse:
        origin = request.headers.get("WebHook-Request-Origin")
        if not origin:
            return error_response(400, "OPTIONS needs a WebHook-Request-Origin header")
        return web.Response(
            status=200, headers={"WebHook-Allowed-Origin": origin, "WebHook-Allowed-Rate": "*"}
        )

    async def _notify(self, entry: Any, payload: Any) -> web.StreamResponse:
        # One CloudEvent (application/cloudevents+json) arrives as an object; every other delivery
        # (Event Grid schema, application/cloudevents-batch+json) as an array.
        events = payload if isinstance(payload, list) else [payload]
        if not all(isinstance(e, dict) for e in events):
            return error_response(400, "expected an event object or a JSON array of event objects")
        try:
            decoded = [decode_event(e) for e in events]
        except (ValueError, TypeError, RecursionError) as exc:
            # Decoded before any invocation: a malformed event fails the delivery as a whole.
            return error_response(400, f"an event cannot be decoded: {exc}")

        failed = 0
        for event in decoded:
            outcome = await self._invoker.invoke(
                entry, event, reason=f"EventGrid trigger fired at {datetime.now(UTC).isoformat()}"
            )
            failed += not outcome.succeeded
        if failed:
            return error_response(500, f"{failed} of {len(decoded)} event(s) failed; Event Grid will retry")
        return web.Response(status=202)
