"""The HTTP API as a client meets it: schemathesis generates requests from /api/openapi.json (valid
ones and, in the negative mode, ones the document forbids) and sends them to a Functions host of this
checkout; every answer is below 500 and conforms (status documented, content type, body schema).
The Event Grid webhook of the same host, which the document does not describe, gets posted events of
either schema and batches of anything.

The host is our own (tests/own_host.py): never the stack's shared one on 7071, which others test
against, and with its own table prefix and queue, dropped afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from functions.openapi import openapi_document
from shared.bootstrap import Services
from tests.conftest import unique_settings
from tests.own_host import OwnHost, own_host
from tests.property import strategies as s
from tests.property.test_ingress_functions import CLOUD, GRID

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
OPERATIONS = [
    (path, method.upper())
    for path, item in openapi_document()["paths"].items()
    for method in item
    if method != "parameters"
]


class Figures:
    requests = 0
    server_errors = 0


@pytest.fixture(scope="module")
def host(tmp_path_factory) -> Iterator[OwnHost]:
    settings_ = unique_settings()
    log = Path(tmp_path_factory.mktemp("openapi-host")) / "host.log"
    with own_host(
        log, BASETRIGGER_TABLE_PREFIX=settings_.table_prefix, BASETRIGGER_BUILD_QUEUE=settings_.build_queue
    ) as running:
        yield running
    Services(settings_).storage.drop_all()
    from tests.chaos.figures import record

    record("openapi", requests=Figures.requests, server_errors=Figures.server_errors)


@pytest.fixture(scope="module")
def schema(host):
    loaded = schemathesis.openapi.from_url(
        f"{host.url}/api/openapi.json", headers={"x-functions-key": host.key}, timeout=30
    )
    loaded.config.generation.update(with_security_parameters=False)
    return loaded


def operation(schema, path: str, method: str):
    for result in schema.get_all_operations():
        op = result.ok()
        if op.path == path and op.method.upper() == method:
            return op
    if path == "/openapi.json":
        pytest.skip("schemathesis leaves out the URL it loaded the document from (checked below)")
    raise AssertionError(f"{method} {path} is not in the served document")


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
@pytest.mark.parametrize(("path", "method"), OPERATIONS, ids=[f"{m} {p}" for p, m in OPERATIONS])
def test_every_operation_answers_below_500_and_as_documented(host, schema, path, method, mode):
    op = operation(schema, path, method)
    session = host.api()

    # Per operation and mode: 6 in `make test`, 100 in `make chaos`.
    @s.examples(6, 100, suppress_health_check=list(HealthCheck), deadline=None)
    @given(case=op.as_strategy(generation_mode=mode))
    def run(case):
        response = case.call(session=session, headers={"x-functions-key": host.key}, timeout=60)
        Figures.requests += 1
        Figures.server_errors += response.status_code >= 500
        case.validate_response(response, checks=CHECKS, headers={"x-functions-key": host.key})

    try:
        run()
    except Unsatisfiable:
        if mode != GenerationMode.NEGATIVE:
            raise
        pytest.skip("nothing in this operation can be made invalid (no parameters, no body)")


def test_the_served_document_is_the_apps(host):
    served = host.api().get(f"{host.url}/api/openapi.json", timeout=30).json()
    assert served == json.loads(json.dumps(openapi_document()))


@s.examples(25, 500)
@given(
    st.one_of(
        st.lists(st.one_of(s.mutated(GRID), s.mutated(CLOUD), s.any_grid_event), max_size=3),
        s.mutated(CLOUD),
        s.json_values,
    ),
    st.sampled_from(["Notification", "SubscriptionValidation", "Unsubscribe", "Other"]),
)
def test_the_event_grid_webhook_answers_below_500(host, events, event_type):
    answer = requests.post(
        f"{host.url}/runtime/webhooks/eventgrid",
        params={"functionName": "eventgrid_image_pushed", "code": host.key},
        headers={"aeg-event-type": event_type},
        data=json.dumps(events),
        timeout=60,
        proxies={"http": "", "https": ""},
    )
    Figures.requests += 1
    Figures.server_errors += answer.status_code >= 500
    assert answer.status_code < 500, answer.text[:500]
    if answer.status_code >= 400:
        assert set(answer.json()["error"]) == {"code", "message"}
