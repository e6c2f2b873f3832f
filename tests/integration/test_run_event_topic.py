"""The Event Grid publisher against an HTTPS endpoint of the test (the stack's CA and server
certificate): what azure-eventgrid sends for a run event, as a custom topic with local auth
disabled receives it. Entra ID is not on this machine, so a token credential of the test stands in
for the managed identity; the request, its bearer token and its body are the SDK's own."""

from __future__ import annotations

import json
import os
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from azure.core.credentials import AccessToken

from shared.adapters.run_event_topic import EventGridRunEventPublisher


class StandInCredential:
    """Hands out a fixed token for Event Grid's scope, as the managed identity would."""

    def __init__(self) -> None:
        self.scopes: list[str] = []

    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        self.scopes.extend(scopes)
        return AccessToken("stand-in-token", 2_000_000_000)


@pytest.fixture
def topic(monkeypatch):
    registry = Path(os.environ.get("STACK_DIR", ".stack")) / "registry"
    if not (registry / "server.crt").exists():
        pytest.fail("start the stack first: its CA and server certificate serve this test's topic")
    received: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            received.append((dict(self.headers), self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(registry / "server.crt", registry / "server.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(registry / "ca.crt"))  # the client trusts the stack's CA
    try:
        yield f"https://localhost:{server.server_address[1]}/api/events", received
    finally:
        server.shutdown()
        server.server_close()


def test_a_run_event_is_sent_as_an_event_grid_event_with_a_bearer_token(topic):
    endpoint, received = topic
    credential = StandInCredential()
    publisher = EventGridRunEventPublisher(endpoint, credential)
    data = {"id": "da7", "task": "app", "status": "Succeeded"}
    publisher.publish("da7.ended", "Basetrigger.Run.Ended", "/tasks/app/runs/da7", data)

    ((headers, body),) = received
    assert headers["Authorization"] == "Bearer stand-in-token"
    assert credential.scopes == ["https://eventgrid.azure.net/.default"]
    (event,) = json.loads(body)
    assert (event["id"], event["eventType"], event["subject"], event["dataVersion"], event["data"]) == (
        "da7.ended", "Basetrigger.Run.Ended", "/tasks/app/runs/da7", "1.0", data)
