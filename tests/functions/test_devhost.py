"""devhost, served against a real Azurite, behaves like the Functions host.

The host runs in a subprocess on a free port over a copy of `sample_app/` whose
`local.settings.json` names unique queues. Azurite is the one in `AzureWebJobsStorage` when that is
set, otherwise one started here (installed by scripts/install.sh into `.stack/node`). Functions of
the sample app write what they received to `$SAMPLE_OUT_DIR/<function>.jsonl`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from devhost.hostconfig import HostConfigError, parse_timespan
from devhost.routes import RouteTemplate
from devhost.settings import SettingsError, load_local_settings, resolve
from devhost.timers import Schedule, ScheduleError

REPO = Path(__file__).resolve().parents[2]
SAMPLE_APP = Path(__file__).parent / "sample_app"
KEY = f"test-key-{uuid.uuid4().hex}"
MAX_BODY = 4096
QUEUE_LEASE = 2  # seconds; the slow queue function runs longer than this
# Azurite's well-known development account key: public, valid only against the emulator.
DEVSTORE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
# Microsoft's example ImagePushed event (Event Grid schema), trimmed.
SAMPLE_EVENT = {
    "id": "c25fdb80-ebbd-4dd0-a29c-a7349e6388f6",
    "topic": "/subscriptions/x/resourceGroups/y/providers/Microsoft.ContainerRegistry/registries/z",
    "subject": "samples/nginx:latest",
    "eventType": "Microsoft.ContainerRegistry.ImagePushed",
    "data": {
        "action": "push",
        "target": {"digest": "sha256:57a94fc9", "repository": "samples/nginx", "tag": "latest"},
        "request": {"host": "z.azurecr.io", "method": "PUT"},
    },
    "dataVersion": "2.0",
    "metadataVersion": "1",
    "eventTime": "2021-09-08T06:37:45.6609948Z",
}


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- Azurite ---------------------------------------------------------------------------------------


def _azurite_queue_binary() -> str | None:
    stack_dir = Path(os.environ.get("STACK_DIR", REPO / ".stack"))
    local = stack_dir / "node" / "node_modules" / ".bin" / "azurite-queue"
    return shutil.which("azurite-queue") or (str(local) if local.exists() else None)


@pytest.fixture(scope="session")
def storage_connection(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if existing := os.environ.get("AzureWebJobsStorage"):
        yield existing
        return
    binary = _azurite_queue_binary()
    if binary is None:
        pytest.fail(
            "Azurite is not installed: run scripts/install.sh (npm install --prefix .stack/node azurite@3)"
        )
    port = free_port()
    location = tmp_path_factory.mktemp("azurite")
    process = subprocess.Popen(
        [
            binary,
            "--queueHost",
            "127.0.0.1",
            "--queuePort",
            str(port),
            "--location",
            str(location),
            "--skipApiVersionCheck",
            "--loose",
            "--silent",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def listening() -> bool:
        assert process.poll() is None, "azurite exited on startup"
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    wait_until(listening, 30, "Azurite to listen")
    yield (
        f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={DEVSTORE_KEY};"
        f"QueueEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    )
    process.terminate()
    process.wait(timeout=10)


# --- the host ----------------------------------------------------------------------------------------


@dataclass
class RunningHost:
    process: subprocess.Popen[bytes]
    base_url: str
    out_dir: Path
    log_path: Path
    connection: str
    queue: str
    slow_queue: str

    def url(self, path: str) -> str:
        return self.base_url + path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def records(self, function: str) -> list[dict[str, Any]]:
        path = self.out_dir / f"{function}.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def queue_client(self, name: str) -> QueueClient:
        # Base64, as the Functions queue trigger expects (host.json messageEncoding default).
        return QueueClient.from_connection_string(
            self.connection, name, message_encode_policy=TextBase64EncodePolicy()
        )

    def send(self, queue: str, payload: dict[str, Any]) -> None:
        with self.queue_client(queue) as client:
            client.send_message(json.dumps(payload))

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


def start_host(tmp_path: Path, connection: str) -> RunningHost:
    root = tmp_path / "app"
    shutil.copytree(SAMPLE_APP, root, ignore=shutil.ignore_patterns("__pycache__"))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    suffix = uuid.uuid4().hex[:12]
    values = {
        "AzureWebJobsStorage": connection,
        "FUNCTIONS_WORKER_RUNTIME": "python",
        "SAMPLE_QUEUE": f"dh-{suffix}",
        "SLOW_QUEUE": f"dh-slow-{suffix}",
        "SAMPLE_OUT_DIR": str(out_dir),
        "SAMPLE_GREETING": "from-file",
    }
    (root / "local.settings.json").write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    env = {k: v for k, v in os.environ.items() if k not in values and k not in ("HOST_PORT", "DEVHOST_KEY")}
    env["SAMPLE_GREETING"] = "from-env"  # a real environment variable beats local.settings.json
    env["DEVHOST_KEY"] = KEY

    port = free_port()
    log_path = tmp_path / "host.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "devhost",
                "--root",
                str(root),
                "--port",
                str(port),
                "--max-body-bytes",
                str(MAX_BODY),
                "--queue-lease",
                str(QUEUE_LEASE),
                "--grace",
                "10",
            ],
            cwd=REPO,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    host = RunningHost(
        process,
        f"http://127.0.0.1:{port}",
        out_dir,
        log_path,
        connection,
        values["SAMPLE_QUEUE"],
        values["SLOW_QUEUE"],
    )

    def running() -> bool:
        if process.poll() is not None:
            pytest.fail(f"devhost exited with {process.returncode}:\n{host.log()}")
        try:
            status = requests.get(host.url("/admin/host/status"), headers={"x-functions-key": KEY}, timeout=1)
            return status.json()["state"] == "Running"
        except requests.RequestException:
            return False

    wait_until(running, 30, "devhost to report Running")
    return host


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, storage_connection: str) -> Iterator[RunningHost]:
    running = start_host(tmp_path_factory.mktemp("devhost"), storage_connection)
    yield running
    assert running.stop() == 0, running.log()


# --- pure parts --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "path", "expected"),
    [
        ("items/{id}/{name?}", "items/5", {"id": "5"}),
        ("items/{id}/{name?}", "Items/5/a%2Fb/", {"id": "5", "name": "a/b"}),
        ("items/{id}/{name?}", "items", None),
        ("runs/{id:int}", "runs/x", None),
        ("runs/{id:int}", "runs/-3", {"id": "-3"}),
        ("files/{*rest}", "files/a/b/c", {"rest": "a/b/c"}),
        ("page/{n=1}", "page", {"n": "1"}),
        ("{name}.{ext}", "report.csv", {"name": "report", "ext": "csv"}),
    ],
)
def test_route_templates(template: str, path: str, expected: dict[str, str] | None) -> None:
    assert RouteTemplate.parse(template).match(path) == expected


def test_literal_segments_take_precedence_over_parameters() -> None:
    literal, param = RouteTemplate.parse("runs/latest"), RouteTemplate.parse("runs/{id}")
    assert literal.precedence < param.precedence


def test_timespans_and_schedules() -> None:
    assert parse_timespan("00:00:02", "x") == 2
    assert parse_timespan("1.00:00:00.5", "x") == 86400.5
    with pytest.raises(HostConfigError):
        parse_timespan(2, "x")
    start = datetime(2024, 1, 1, 0, 3, 7, tzinfo=UTC)
    assert Schedule("0 */5 * * * *").next_after(start) == datetime(2024, 1, 1, 0, 5, tzinfo=UTC)
    assert Schedule("00:00:10").next_after(start) - start == timedelta(seconds=10)
    with pytest.raises(ScheduleError):
        Schedule("every minute")


def test_local_settings_do_not_override_environment(tmp_path: Path) -> None:
    (tmp_path / "local.settings.json").write_text(json.dumps({"Values": {"A": "file", "B": "file", "N": 3}}))
    environ = {"A": "env"}
    load_local_settings(tmp_path, environ)
    assert environ == {"A": "env", "B": "file", "N": "3"}
    assert resolve("%B%-poison", environ) == "file-poison"
    with pytest.raises(SettingsError, match="MISSING"):
        resolve("%MISSING%", environ)


# --- startup and status ------------------------------------------------------------------------------


def test_status_needs_the_key_and_errors_have_the_api_shape(host: RunningHost) -> None:
    anonymous = requests.get(host.url("/admin/host/status"), timeout=5)
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "Unauthorized" and "state" not in anonymous.json()
    unknown = requests.get(host.url("/api/no-such-function"), timeout=5)
    assert unknown.status_code == 404 and set(unknown.json()["error"]) == {"code", "message"}
    assert requests.get(host.url("/admin/host/ping"), timeout=5).status_code == 200


def test_deeply_nested_event_grid_bodies_are_refused_not_crashed(host: RunningHost) -> None:
    deep = b"[" * 2_000 + b"]" * 2_000  # under the test host's 4 KiB body limit, over the parser's depth
    answer = requests.post(webhook(host), data=deep, headers={"aeg-event-type": "Notification"}, timeout=5)
    assert answer.status_code == 400 and "nested" in answer.json()["error"]["message"]


def test_status_lists_served_functions_and_unresolvable_ones(host: RunningHost) -> None:
    status = requests.get(host.url("/admin/host/status"), headers={"x-functions-key": KEY}, timeout=5).json()
    assert status["state"] == "Running"
    assert {"hello", "secret", "events", "flaky", "flaky_poison", "tick"} <= set(status["functions"])
    assert "MISSING_SCHEDULE" in status["errors"]["unresolved"]
    assert f"queueTrigger on '{host.queue}-poison'" in host.log()


# --- HTTP triggers -----------------------------------------------------------------------------------


def test_route_params_query_headers_and_settings(host: RunningHost) -> None:
    response = requests.get(host.url("/api/hello/bob/hi?x=1"), headers={"X-Sample": "h"}, timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["X-Sample"] == "yes"
    body = response.json()
    assert body["route_params"] == {"name": "bob", "greeting": "hi"}
    assert body["params"] == {"x": "1"}
    assert body["header"] == "h"
    assert body["url"].endswith("/api/hello/bob/hi?x=1")
    assert body["setting"] == "from-env"

    assert requests.get(host.url("/api/hello/alice"), timeout=5).json()["route_params"] == {"name": "alice"}


def test_most_specific_route_for_the_method_wins(host: RunningHost) -> None:
    assert requests.get(host.url("/api/hello/world"), timeout=5).text == "the literal route"
    posted = requests.post(host.url("/api/hello/world"), data=b"payload", timeout=5)
    assert posted.json()["route_params"] == {"name": "world"}
    assert posted.json()["body"] == "payload"
    deleted = requests.delete(host.url("/api/hello/world"), timeout=5)
    assert deleted.status_code == 405
    assert deleted.headers["Allow"] == "GET, POST"


def test_unknown_paths_and_constraints_are_404(host: RunningHost) -> None:
    assert requests.get(host.url("/api/nothing-here"), timeout=5).status_code == 404
    assert requests.get(host.url("/hello/bob"), timeout=5).status_code == 404  # outside the route prefix
    assert requests.get(host.url("/api/async/abc"), timeout=5).status_code == 404
    assert requests.get(host.url("/api/async/21"), timeout=5).text == "async 42"  # an async def function


def test_function_and_admin_levels_need_the_key(host: RunningHost) -> None:
    assert requests.post(host.url("/api/secret"), data=b"x", timeout=5).status_code == 401
    wrong = requests.post(host.url("/api/secret"), data=b"x", headers={"x-functions-key": "nope"}, timeout=5)
    assert wrong.status_code == 401

    by_header = requests.post(host.url("/api/secret"), data=b"x", headers={"x-functions-key": KEY}, timeout=5)
    assert by_header.status_code == 201
    assert by_header.json()["body"] == "x"
    assert by_header.json()["invocation_id"]
    assert requests.post(host.url(f"/api/secret?code={KEY}"), data=b"x", timeout=5).status_code == 201

    assert requests.get(host.url("/api/admin-only"), timeout=5).status_code == 401
    assert requests.get(host.url(f"/api/admin-only?code={KEY}"), timeout=5).text == "admin"


def test_request_body_limit(host: RunningHost) -> None:
    assert requests.post(host.url("/api/hello/x"), data=b"a" * MAX_BODY, timeout=5).status_code == 200

    too_large = requests.post(host.url("/api/hello/x"), data=b"a" * (MAX_BODY + 1), timeout=5)
    assert too_large.status_code == 413
    assert str(MAX_BODY) in too_large.json()["error"]["message"]

    # Chunked, so no Content-Length announces the size: the limit still holds while streaming.
    chunks = (b"a" * 1024 for _ in range(8))
    assert requests.post(host.url("/api/hello/x"), data=chunks, timeout=5).status_code == 413


def test_exception_is_a_generic_500_and_the_traceback_is_logged(host: RunningHost) -> None:
    response = requests.get(host.url("/api/boom"), timeout=5)
    assert response.status_code == 500
    assert "sensitive" not in response.text
    invocation_id = response.json()["error"]["invocationId"]
    log = wait_until(lambda: "sensitive-detail-in-traceback" in host.log() and host.log(), 5, "the traceback")
    assert f"Executed 'Functions.boom' (Failed, Id={invocation_id}" in log
    assert "Executing 'Functions.hello' (Reason=" in log


# --- Event Grid --------------------------------------------------------------------------------------


def webhook(host: RunningHost, function: str = "events", key: str | None = KEY) -> str:
    query = f"?functionName={function}" + (f"&code={key}" if key else "")
    return host.url("/runtime/webhooks/eventgrid" + query)


def test_event_grid_webhook_needs_the_key_and_a_known_function(host: RunningHost) -> None:
    assert requests.post(webhook(host, key=None), json=[SAMPLE_EVENT], timeout=5).status_code == 401
    assert requests.post(webhook(host, "hello"), json=[SAMPLE_EVENT], timeout=5).status_code == 404
    assert requests.post(webhook(host, "no_such"), json=[SAMPLE_EVENT], timeout=5).status_code == 404


def test_event_grid_subscription_validation_handshake(host: RunningHost) -> None:
    validation = [
        {
            "id": "2d1781af-3a4c-4d7c-bd0c-e34b19da4e66",
            "topic": "/subscriptions/x",
            "subject": "",
            "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"},
            "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
            "eventTime": "2018-01-25T22:12:19.4556811Z",
            "metadataVersion": "1",
            "dataVersion": "1",
        }
    ]
    response = requests.post(
        webhook(host), json=validation, headers={"aeg-event-type": "SubscriptionValidation"}, timeout=5
    )
    assert response.status_code == 200
    assert response.json() == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}
    assert all(r["id"] != validation[0]["id"] for r in host.records("events"))  # not an invocation


def test_cloudevents_webhook_validation(host: RunningHost) -> None:
    response = requests.options(
        webhook(host), headers={"WebHook-Request-Origin": "eventgrid.azure.net"}, timeout=5
    )
    assert response.status_code == 200
    assert response.headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"
    assert "WebHook-Allowed-Rate" in response.headers


def test_event_grid_notifications_invoke_once_per_event(host: RunningHost) -> None:
    first = {**SAMPLE_EVENT, "id": str(uuid.uuid4())}
    second = {**SAMPLE_EVENT, "id": str(uuid.uuid4()), "subject": "other:tag"}
    response = requests.post(
        webhook(host), json=[first, second], headers={"aeg-event-type": "Notification"}, timeout=5
    )
    assert response.status_code == 202
    received = {r["id"]: r for r in host.records("events")}
    assert received[first["id"]]["kind"] == "EventGridEvent"
    assert received[first["id"]]["data"] == SAMPLE_EVENT["data"]
    assert received[second["id"]]["subject"] == "other:tag"


def test_a_single_cloudevent_is_decoded_as_one(host: RunningHost) -> None:
    event = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "/registries/local",
        "subject": "app:1",
        "type": "Microsoft.ContainerRegistry.ImagePushed",
        "time": "2021-09-08T06:37:45.6609948Z",
        "data": {"target": {"repository": "app", "tag": "1"}},
    }
    response = requests.post(
        webhook(host),
        data=json.dumps(event),
        headers={"Content-Type": "application/cloudevents+json; charset=utf-8"},
        timeout=5,
    )
    assert response.status_code == 202
    [record] = [r for r in host.records("events") if r["id"] == event["id"]]
    assert record["kind"] == "CloudEvent"
    assert record["data"] == event["data"]


def test_a_failing_event_fails_the_delivery_after_the_others_ran(host: RunningHost) -> None:
    ids = [str(uuid.uuid4()) for _ in range(3)]
    batch = [
        {**SAMPLE_EVENT, "id": ids[0]},
        {**SAMPLE_EVENT, "id": ids[1], "subject": "fail"},
        {**SAMPLE_EVENT, "id": ids[2]},
    ]
    response = requests.post(webhook(host), json=batch, timeout=5)
    assert response.status_code == 500  # Event Grid retries the delivery
    assert {r["id"] for r in host.records("events")} >= set(ids)


def test_malformed_event_grid_bodies_are_400(host: RunningHost) -> None:
    assert requests.post(webhook(host), data=b"{not json", timeout=5).status_code == 400
    assert requests.post(webhook(host), json=[1, 2], timeout=5).status_code == 400
    handshake_without_code = requests.post(
        webhook(host),
        json=[{"eventType": "x"}],
        headers={"aeg-event-type": "SubscriptionValidation"},
        timeout=5,
    )
    assert handshake_without_code.status_code == 400


# --- queues ------------------------------------------------------------------------------------------


def approximate_count(host: RunningHost, queue: str) -> int:
    with host.queue_client(queue) as client:
        return client.get_queue_properties().approximate_message_count


def attempts(host: RunningHost, function: str, tag: str) -> list[dict[str, Any]]:
    return [r for r in host.records(function) if r["payload"].get("tag") == tag]


def test_queue_message_succeeds_and_is_deleted(host: RunningHost) -> None:
    tag = uuid.uuid4().hex
    host.send(host.queue, {"tag": tag})
    [record] = wait_until(lambda: attempts(host, "flaky", tag), 15, "the queue function")
    assert record["dequeue_count"] == 1
    assert record["pop_receipt"]
    wait_until(lambda: approximate_count(host, host.queue) == 0, 10, "the message to be deleted")
    assert "New queue message detected on" in host.log()


def test_queue_message_retried_until_it_succeeds(host: RunningHost) -> None:
    tag = uuid.uuid4().hex
    host.send(host.queue, {"tag": tag, "fail_times": 2})
    wait_until(lambda: len(attempts(host, "flaky", tag)) == 3, 30, "three attempts")
    assert [r["dequeue_count"] for r in attempts(host, "flaky", tag)] == [1, 2, 3]
    assert len({r["id"] for r in attempts(host, "flaky", tag)}) == 1
    time.sleep(2.5)  # longer than visibilityTimeout + maxPollingInterval: no fourth attempt, no poison
    assert len(attempts(host, "flaky", tag)) == 3
    assert attempts(host, "flaky_poison", tag) == []


def test_queue_message_moves_to_poison_after_max_dequeue_count(host: RunningHost) -> None:
    tag = uuid.uuid4().hex
    host.send(host.queue, {"tag": tag, "fail_times": -1})
    [poisoned] = wait_until(lambda: attempts(host, "flaky_poison", tag), 40, "the poison queue function")
    assert [r["dequeue_count"] for r in attempts(host, "flaky", tag)] == [1, 2, 3]  # maxDequeueCount
    assert poisoned["payload"] == {"tag": tag, "fail_times": -1}  # the original message, still Base64
    assert poisoned["dequeue_count"] == 1
    assert "Message has reached MaxDequeueCount of 3" in host.log()


def test_a_long_invocation_keeps_its_message_invisible(host: RunningHost) -> None:
    seconds = QUEUE_LEASE * 2.5
    host.send(host.slow_queue, {"seconds": seconds})
    wait_until(lambda: host.records("slow_build_done"), seconds + 15, "the slow function to finish")
    time.sleep(QUEUE_LEASE + 1.5)  # a message whose lease lapsed would have been redelivered by now
    assert len(host.records("slow_build")) == 1
    assert approximate_count(host, host.slow_queue) == 0


# --- timers ------------------------------------------------------------------------------------------


def test_timer_runs_on_startup_and_every_second(host: RunningHost) -> None:
    ticks = wait_until(lambda: len(host.records("tick")) >= 3 and host.records("tick"), 10, "three ticks")
    times = [t["at"] for t in ticks]
    # One a second after the startup run; generous upper bound for a loaded CI machine.
    assert all(0.5 < b - a < 2.5 for a, b in zip(times[1:], times[2:], strict=False))
    assert ticks[-1]["past_due"] is False
    assert "Reason='Timer fired at" in host.log()


# --- shutdown ----------------------------------------------------------------------------------------


def test_sigterm_lets_in_flight_requests_finish(tmp_path: Path, storage_connection: str) -> None:
    own = start_host(tmp_path, storage_connection)
    result: dict[str, requests.Response] = {}
    request = threading.Thread(
        target=lambda: result.setdefault("r", requests.get(own.url("/api/slow?seconds=2"), timeout=15))
    )
    request.start()
    wait_until(lambda: "Executing 'Functions.slow'" in own.log(), 5, "the slow request to start")
    own.process.send_signal(signal.SIGTERM)
    request.join(timeout=15)
    assert result["r"].status_code == 200
    assert result["r"].text == "slept"
    assert own.process.wait(timeout=15) == 0
    assert "Host stopped" in own.log()
