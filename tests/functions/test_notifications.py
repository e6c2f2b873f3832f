"""Run notifications (`--update-trigger-endpoint`) from a host of this checkout to receivers in the
test: one sees the start and the end of a run, signed with the task's secret; one that is down (a
closed port) and one that hangs neither slow nor fail the build, and the failure is in the decision
log."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import unique_settings
from tests.integration.buildah_tools import push_base
from tests.own_host import free_port, own_host

SECRET = "notification-secret"
ENDED = ("Succeeded", "Failed", "Error", "Canceled", "Timeout")


class Receiver:
    """An HTTP endpoint that records each POST; with `hang`, it answers none until released."""

    def __init__(self, hang: bool = False):
        self.hang = hang
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.answered = 0
        self.release = threading.Event()
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.arrived:
                    receiver.received.append((dict(self.headers), body))
                    receiver.arrived.notify_all()
                if receiver.hang:
                    receiver.release.wait()
                try:
                    self.send_response(204)
                    self.end_headers()
                except OSError:
                    pass  # the sender gave up waiting: what this test wants
                receiver.answered += 1

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/build?token=t0ken"

    def wait_for(self, count: int, deadline_seconds: float = 180) -> list[dict]:
        """The first `count` bodies received (waits for them; a failure says what came)."""
        deadline = time.monotonic() + deadline_seconds
        with self.arrived:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"received {len(self.received)} notifications, expected {count}")
                self.arrived.wait(left)
            return [json.loads(body) for _, body in self.received[:count]]


@contextmanager
def serving(receiver: Receiver) -> Iterator[Receiver]:
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.release.set()
        receiver.server.shutdown()
        receiver.server.server_close()


@pytest.fixture
def settings():
    settings = unique_settings()
    yield settings
    from shared.bootstrap import Services

    Services(settings).storage.drop_all()


def finished(host, run_id: str) -> dict:
    deadline = time.monotonic() + 300
    while True:
        run = host.api().get(f"{host.url}/api/runs/{run_id}", timeout=30).json()
        if run["status"] in ENDED:
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} still {run['status']}")
        time.sleep(1)


def failure_decisions(host, run_id: str, count: int) -> list[dict]:
    deadline = time.monotonic() + 240  # every retry of the start and of the end: about a minute
    while True:
        decisions = host.api().get(f"{host.url}/api/decisions", params={"top": 200}, timeout=30).json()
        found = [d for d in decisions["decisions"]
                 if d["outcome"] == "notification-failed" and run_id in d["runs"]]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(2)


def test_receivers_see_the_start_and_end_and_dead_ones_neither_slow_nor_fail_the_build(settings, tmp_path):
    registry = os.environ.get("REGISTRY", "localhost:5000")
    name = f"ntf{uuid.uuid4().hex[:8]}"
    base = f"{registry}/{name}/base:1"
    push_base(tmp_path, base, "one")
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {base}\nRUN cat /etc/base-version\n")
    closed = f"http://127.0.0.1:{free_port()}/hook"  # nobody listens there
    with serving(Receiver()) as good, serving(Receiver(hang=True)) as hanging, own_host(
            tmp_path / "host.log", BASETRIGGER_TABLE_PREFIX=settings.table_prefix,
            BASETRIGGER_BUILD_QUEUE=settings.build_queue,
            BASETRIGGER_LOCAL_CONTEXT_ROOTS=str(tmp_path)) as host:
        api = host.api()
        endpoints = {"good": (good.url, SECRET), "closed": (closed, None), "hanging": (hanging.url, None)}
        runs = {}
        for kind, (endpoint, secret) in endpoints.items():
            created = api.post(f"{host.url}/api/tasks", timeout=120, json={
                "name": f"{name}-{kind}", "images": [f"{name}/{kind}:{{{{.Run.ID}}}}"],
                "context": str(context), "update_trigger_endpoint": endpoint,
                "update_trigger_secret": secret})
            assert created.status_code == 201, created.text
            shown = created.json()["update_trigger"]
            assert shown == {"endpoint": endpoint, "secret": secret is not None}
            assert SECRET not in created.text
            started = api.post(f"{host.url}/api/tasks/{name}-{kind}/runs", timeout=120)
            assert started.status_code in (200, 201, 202), started.text
            runs[kind] = started.json()["run_id"]

        # The hanging receiver holds the start's POST open and answers nothing ...
        (hung_start,) = hanging.wait_for(1)
        assert hung_start["type"] == "run.started"
        # ... while every build goes on to its end, the one whose endpoint is closed too.
        ended = {kind: finished(host, run_id) for kind, run_id in runs.items()}
        assert {kind: run["status"] for kind, run in ended.items()} == dict.fromkeys(runs, "Succeeded")
        assert hanging.answered == 0 and not hanging.release.is_set()  # still hanging as the runs ended

        start, end = good.wait_for(2)
        run_id = runs["good"]
        assert (start["id"], start["type"], start["run"]["status"]) == (f"{run_id}.started", "run.started",
                                                                        "Running")
        assert (end["id"], end["type"], end["run"]["status"]) == (f"{run_id}.ended", "run.ended", "Succeeded")
        assert end["run"]["task"] == f"{name}-good" and end["run"]["images"] == ended["good"]["output_images"]
        for headers, body in good.received:
            expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            assert headers["X-Basetrigger-Signature-256"] == expected
            assert headers["X-Basetrigger-Delivery"] == json.loads(body)["id"]

        # The closed port's start and end were retried, then recorded as failures (no token quoted).
        failures = failure_decisions(host, runs["closed"], 2)
        assert len(failures) == 2, failures
        assert all("127.0.0.1" in d["reason"] and "/hook" not in d["reason"] for d in failures)
        hanging.release.set()
