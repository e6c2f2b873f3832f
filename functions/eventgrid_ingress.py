"""Event Grid trigger: ACR `ImagePushed` events (Event Grid or CloudEvents schema) into receive."""

import logging

import azure.functions as func

from shared.adapters.ingress.eventgrid import from_eventgrid
from shared.bootstrap import services
from shared.domain.events import Rejected

bp = func.Blueprint()


@bp.function_name("eventgrid_image_pushed")
@bp.event_grid_trigger(arg_name="event")
def eventgrid_image_pushed(event: func.EventGridEvent) -> None:
    if isinstance(event, func.CloudEvent):
        arrival = from_eventgrid(event_id=event.id, event_type=event.type, data=event.get_json(),
                                 time=event.time)
    else:
        arrival = from_eventgrid(event_id=event.id, event_type=event.event_type, data=event.get_json(),
                                 time=event.event_time)
    if isinstance(arrival, Rejected):
        # Retrying an event that can never parse helps nobody: it is recorded, and acknowledged.
        logging.warning("rejected Event Grid event %s: %s", arrival.event_id, arrival.reason)
    # A pushed manifest list's platforms are read before dispatch; a dispatch that could not
    # complete raises DispatchIncomplete, and Event Grid delivers the event again.
    services().ingest.receive([arrival])
