"""Publishes run events to an Event Grid custom topic with the app's managed identity
(azure-eventgrid's EventGridPublisherClient; the topic has local auth disabled, so there is no key).
Bounded timeouts and a few retries: a topic that does not answer holds the publishing thread, never
a build."""

from __future__ import annotations

from typing import Any

from azure.core.credentials import TokenCredential
from azure.eventgrid import EventGridEvent, EventGridPublisherClient

DATA_VERSION = "1.0"


class EventGridRunEventPublisher:
    def __init__(self, endpoint: str, credential: TokenCredential):
        self.endpoint = endpoint
        self.client = EventGridPublisherClient(endpoint, credential, connection_timeout=5, read_timeout=10,
                                               retry_total=3, retry_backoff_factor=1.0)

    def publish(self, event_id: str, event_type: str, subject: str, data: dict[str, Any]) -> None:
        self.client.send(EventGridEvent(subject=subject, event_type=event_type, data=data,
                                        data_version=DATA_VERSION, id=event_id))
