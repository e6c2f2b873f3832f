"""What the CLI's client makes of answers that are not what it asked for: one ApiError line, never
a traceback. A real HTTP server on this machine plays the API."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cli.client import ApiError, Client

# path -> (status, body) the server answers
ANSWERS = {
    "/api/tasks": (204, b""),
    "/api/graph": (200, b"[1, 2]"),
    "/api/waves": (200, b'{"waves": null}'),
}


class _Api(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        status, body = ANSWERS[self.path.split("?", 1)[0]]
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def client() -> Iterator[Client]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Client(f"http://127.0.0.1:{server.server_address[1]}", timeout=10)
    finally:
        server.shutdown()
        server.server_close()


def test_an_empty_answer_where_a_list_was_asked_for_is_an_api_error(client: Client) -> None:
    with pytest.raises(ApiError, match="GET /api/tasks without a JSON object"):
        client.list_tasks()


def test_a_json_list_where_an_object_was_asked_for_is_an_api_error(client: Client) -> None:
    with pytest.raises(ApiError, match="GET /api/graph without a JSON object"):
        client.graph()


def test_an_object_without_its_list_is_an_api_error(client: Client) -> None:
    with pytest.raises(ApiError, match="GET /api/waves without 'waves'"):
        client.waves()
