"""Event Grid trigger: ACR `ImagePushed` events (Event Grid or CloudEvents schema) into dispatch."""

import logging

import azure.functions as func

from shared.bootstrap import services
from shared.domain.events import MalformedEvent, from_eventgrid, printable_id
from shared.domain.vocabulary import EventSource

bp = func.Blueprint()


@bp.function_name("eventgrid_image_pushed")
@bp.event_grid_trigger(arg_name="event")
def eventgrid_image_pushed(event: func.EventGridEvent) -> None:
    if isinstance(event, func.CloudEvent):
        parts = dict(event_id=event.id, event_type=event.type, data=event.get_json(), time=event.time)
    else:
        parts = dict(event_id=event.id, event_type=event.event_type, data=event.get_json(),
                     time=event.event_time)
    try:
        pushed = from_eventgrid(**parts)
    except MalformedEvent as exc:
        # Retrying an event that can never parse helps nobody: record why and acknowledge it.
        event_id = printable_id(parts["event_id"])
        logging.warning("rejected Event Grid event %s: %s", event_id, exc)
        services().dispatcher.reject(event_id, EventSource.EVENTGRID, str(exc))
        return
    # Through ingest: a pushed manifest list's platforms are read before dispatch.
    services().ingest.handle_all([pushed])
