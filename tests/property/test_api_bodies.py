"""Every /api route called as the host calls it, on real storage, with path values, query strings and
bodies that are almost right (a real request with a few values replaced) or anything at all: the
answer is always below 500 and, when it refuses, in the API's error shape.

Task contexts are real folders holding a Dockerfile drawn from the Dockerfile strategy, so what
reaches parsing, storage and the index is what a user could send.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
from pathlib import Path
from urllib.parse import quote

import azure.functions as func
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from functions.openapi import openapi_document
from shared.domain.image_ref import fits_a_key
from shared.domain.images import render
from tests.functions.test_app import by_name
from tests.property import strategies as s
from tests.property.test_archives import archives as archive_bytes

REGISTRY = os.environ.get("REGISTRY", "localhost:5000")
WEBHOOKS = ("/hooks/",)
# Answers that are not JSON.
TEXT_ROUTES = {"/runs/{run_id}/log"}


def operations() -> list[tuple[str, str, dict]]:
    found = []
    for path, item in openapi_document()["paths"].items():
        if path.startswith(WEBHOOKS):
            continue  # tests/property/test_ingress_functions.py
        for method, op in item.items():
            if method != "parameters":
                found.append((path, method.upper(), op))
    return found


def function_for(path: str) -> str:
    route = path.lstrip("/")
    (name,) = [
        n for n, e in by_name().items() if e.trigger_type == "httpTrigger" and e.trigger["route"] == route
    ]
    return name


CONTEXTS = Path(tempfile.mkdtemp(prefix="bt-prop-contexts-"))
_counter = iter(range(10**9))


def context_with(dockerfile: str) -> str:
    folder = CONTEXTS / f"c{next(_counter)}"
    folder.mkdir()
    (folder / "Dockerfile").write_text(dockerfile, encoding="utf-8", errors="surrogateescape")
    return str(folder)


def tar_gz(dockerfile: str) -> str:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        data = dockerfile.encode("utf-8", "surrogateescape")
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return base64.b64encode(gzip.compress(out.getvalue())).decode()


local_dockerfile = st.one_of(
    st.sampled_from(
        [
            f"FROM {REGISTRY}/base/node:9-alpine\nRUN true\n",
            f"ARG B={REGISTRY}/base/x:1\nFROM $B AS build\nFROM build\n",
            f"FROM scratch\nFROM {REGISTRY}/" + "a/" * 120 + "a:" + "t" * 128 + "\n",
            "FROM a\n\\",
            "FROM scratch\n",
        ]
    ),
    s.dockerfile_text,
)
LONG_IMAGE = f"{REGISTRY}/" + "a/" * 115 + "a:" + "t" * 128
task_names = st.one_of(st.sampled_from(["app", "base", "app-2", "A_b"]), s.odd_text)
run_ids = st.one_of(st.sampled_from(["da1", "da2", "da99999", "da0", "da"]), s.odd_text)
references = st.one_of(s.reference_like, s.reference_like.map(lambda r: quote(r, safe="")))
wave_ids = st.one_of(st.sampled_from(["da1", "w1"]), s.odd_text)


def fits_a_request_line(value: str) -> bool:
    """Hosts refuse request lines over 8 KiB (aiohttp in devhost, Kestrel in Azure) before any
    function runs: longer path or query values never reach the app."""
    return len(quote(value, safe="")) <= 8000


PATH_VALUES = {
    name: values.filter(fits_a_request_line)
    for name, values in {
        "name": task_names,
        "run_id": run_ids,
        "ref": references,
        "wave_id": wave_ids,
        # A task timer's name (`task timer add --timer-name`): names and odd text alike.
        "timer": st.one_of(task_names, s.odd_text),
    }.items()
}

contexts = st.one_of(
    local_dockerfile.map(context_with),
    st.sampled_from(["/nonexistent/ctx", "relative/ctx", "", "file:///nonexistent/repo.git", str(CONTEXTS)]),
)
string_maps = st.one_of(s.build_args, st.dictionaries(s.odd_text, s.odd_text, max_size=2), s.json_values)
task_body = st.fixed_dictionaries(
    {
        "name": task_names,
        "images": st.one_of(
            st.lists(
                s.reference_like.map(lambda r: r + ":{{.Run.ID}}") | s.reference_like, min_size=1, max_size=2
            ),
            st.just(["app:{{.Run.ID}}"]),
        ),
        "context": contexts,
    },
    optional={
        "dockerfile": st.sampled_from(["Dockerfile", "../Dockerfile", "/etc/passwd", "x"]) | s.odd_text,
        "build_args": string_maps,
        "secret_args": string_maps,
        "branch": st.none() | s.odd_text,
        "git_access_token": st.none() | s.odd_text,
        "base_image_trigger_enabled": st.booleans() | s.json_values,
        "base_image_trigger_type": st.sampled_from(["Runtime", "All", "runtime", ""]),
        "platform": st.sampled_from(["linux", "linux/amd64", "linux/arm64/v8", "windows", ""]) | s.odd_text,
        "update_trigger_endpoint": st.none() | st.sampled_from(
            ["https://hooks.example.com/b?t=1", "http://169.254.169.254/", "http://u:p@x/", "ftp://x/",
             "http://[::1", "http://x:99999/", ""]) | s.odd_text,
        "update_trigger_secret": st.none() | s.odd_text,
        "context_archive": st.one_of(
            local_dockerfile.map(tar_gz),
            archive_bytes.map(lambda b: base64.b64encode(b).decode()),
            s.odd_text,
        ),
    },
)
build_body = st.fixed_dictionaries(
    {
        "images": st.lists(s.reference_like, max_size=2),
        "context": st.one_of(
            local_dockerfile.map(tar_gz),
            archive_bytes.map(lambda b: base64.b64encode(b).decode()),
            s.odd_text,
        ),
    },
    optional={"dockerfile": s.odd_text, "build_args": string_maps, "platform": s.odd_text},
)
credential_body = st.fixed_dictionaries(
    {"login_server": st.sampled_from([REGISTRY, "myregistry.azurecr.io", "docker.io"]) | s.odd_text},
    optional={"username": s.odd_text, "password": s.odd_text, "use_identity": st.booleans() | s.json_values},
)
rebuild_body = st.fixed_dictionaries({"image": s.reference_like}, optional={"digest": st.none() | s.digest})


def near(strategy):
    """A well-formed body, or one with a few values replaced or removed, or any JSON, or any bytes."""
    return st.one_of(
        strategy,
        strategy.flatmap(s.mutated),
        s.json_values,
        st.binary(max_size=40),
        st.just(b'{"a":' * 5000 + b"1" + b"}" * 5000),
    )


def body_for(path: str, method: str) -> st.SearchStrategy:
    if path in ("/tasks", "/tasks/{name}") and method in ("POST", "PATCH"):
        return near(task_body)
    if path == "/builds":
        return near(build_body)
    if path == "/tasks/{name}/credentials" and method in ("POST", "PATCH"):
        return near(credential_body)
    if path == "/bases/rebuild":
        return near(rebuild_body)
    if path == "/tasks/{name}/runs":
        return near(st.fixed_dictionaries({}, optional={"force": st.booleans() | s.json_values}))
    return st.one_of(st.just(b""), s.json_values)


def query_for(op: dict) -> st.SearchStrategy[dict]:
    values = {}
    for param in op.get("parameters", []):
        if param["in"] != "query":
            continue
        schema = param.get("schema", {})
        valid = (
            st.sampled_from(schema["enum"])
            if "enum" in schema
            else st.integers(-5, 2000).map(str)
            if schema.get("type") == "integer"
            else st.sampled_from(["app", "da1", f"{REGISTRY}/base/node:9-alpine", "node"])
        )
        values[param["name"]] = st.one_of(valid, valid, s.odd_text.filter(fits_a_request_line))
    return st.fixed_dictionaries({}, optional=values)


@st.composite
def requests(draw):
    path, method, op = draw(st.sampled_from(operations()))
    route = {name: draw(PATH_VALUES[name]) for name in re.findall(r"{(\w+)}", path)}
    params = draw(query_for(op))
    body = draw(body_for(path, method))
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return path, method, route, params, raw


def answer(path: str, method: str, route: dict, params: dict, body: bytes) -> func.HttpResponse:
    url = "/api" + re.sub(r"{(\w+)}", lambda m: quote(route[m.group(1)], safe=""), path)
    request = func.HttpRequest(method, url, body=body, params=params, route_params=route)
    return by_name()[function_for(path)].user_function(request)


def check(path: str, answer_: func.HttpResponse) -> None:
    status = answer_.status_code
    assert status < 500, answer_.get_body()[:800]
    if status == 204 or (path in TEXT_ROUTES and status == 200):
        return
    data = json.loads(answer_.get_body())
    if status >= 400:
        assert set(data["error"]) == {"code", "message"}, data
    # What was accepted can be run: a run's rows are keyed by its output images (`image|<image>|…`).
    if path == "/tasks" and status == 201:
        for template in data["images"]:
            assert fits_a_key(render(template, "da99999999", REGISTRY)), template
    if path == "/builds" and status == 202:
        assert all(fits_a_key(image) for image in data["output_images"]), data["output_images"]


@pytest.fixture(scope="module", autouse=True)
def known_state(edge):
    """A task and a run to find, so reads and updates meet real rows as well as missing ones."""
    context = context_with(f"FROM {REGISTRY}/base/node:9-alpine\n")
    body = json.dumps({"name": "app", "images": ["app:{{.Run.ID}}"], "context": context}).encode()
    created = answer("/tasks", "POST", {}, {}, body)
    assert created.status_code == 201, created.get_body()
    queued = answer("/tasks/{name}/runs", "POST", {"name": "app"}, {}, b"{}")
    assert queued.status_code == 202, queued.get_body()
    yield
    shutil.rmtree(CONTEXTS, ignore_errors=True)


@given(requests())
@example(
    (
        "/tasks",
        "POST",
        {},
        {},
        json.dumps(
            {"name": "lonecontinuation", "images": ["x:1"], "context": context_with("FROM a\n\\")}
        ).encode(),
    )
)
@example(("/runs", "GET", {}, {"image": "a/" * 200 + "a"}, b""))
# A valid image name too long for the run table's keys: once accepted, then every delivery of its
# run crashed (a ValueError when the run's rows were written at start).
@example(
    (
        "/builds",
        "POST",
        {},
        {},
        json.dumps({"images": [LONG_IMAGE], "context": tar_gz("FROM scratch\n")}).encode(),
    )
)
@example(
    (
        "/tasks",
        "POST",
        {},
        {},
        json.dumps(
            {"name": "long", "images": [LONG_IMAGE], "context": context_with("FROM scratch\n")}
        ).encode(),
    )
)
@example(("/tasks/{name}/decisions", "GET", {"name": "a/b"}, {}, b""))
def test_every_api_route_answers_below_500(edge, request_):
    path, method, route, params, body = request_
    check(path, answer(path, method, route, params, body))
