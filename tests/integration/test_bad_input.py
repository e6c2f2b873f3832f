"""Bad input through the running host: each answered with a 4xx (or acknowledged and recorded, for
events no retry can fix), never a 5xx that makes a sender retry for a day."""

from __future__ import annotations

import base64
import gzip
import os
import tarfile
import time
import uuid

import pytest
import requests

from shared.domain.vocabulary import Outcome
from tests.integration.test_pipeline import post_eventgrid

DEEP = b'{"a":' * 10_000 + b"1" + b"}" * 10_000


@pytest.fixture(scope="module")
def api():
    key = {"x-functions-key": os.environ["BASETRIGGER_KEY"]}

    def call(method, path, **kwargs):
        return requests.request(method, f"{os.environ['BASETRIGGER_URL']}/api{path}", headers=key,
                                timeout=30, **kwargs)

    return call


def rejected(stack, event_id: str):
    """The rejection recorded for an event id (rejections keep no marker: found among the recent)."""
    for _ in range(50):
        found = [d for d in stack.decisions.recent(top=50) if d.event_id == event_id]
        if found:
            return found[0]
        time.sleep(0.1)
    return None


@pytest.mark.parametrize(("event_id", "recorded_as"), [
    ({"a": 1}, "{'a': 1}"),
    ("x" * 2000, "x" * 120 + "…"),
])
def test_event_grid_events_with_ids_that_cannot_be_stored_are_acknowledged_and_recorded(
        stack, event_id, recorded_as):
    answer = post_eventgrid([{"id": event_id, "eventType": "push", "subject": "s", "data": {},
                              "eventTime": "2026-11-29T00:00:00Z", "dataVersion": "1"}])
    assert answer.status_code == 202, answer.text
    decision = rejected(stack, recorded_as)
    assert decision is not None and decision.outcome == Outcome.REJECTED
    assert "event id" in decision.reason


@pytest.mark.parametrize("target", [
    {"digest": "sha256:" + "f" * 70_000},
    {"repository": "r" * 200_000},
    {"digest": "sha256:xyz"},
])
def test_event_grid_pushes_with_oversized_or_malformed_fields_are_rejected_not_retried(stack, target):
    event_id = str(uuid.uuid4())
    data = {"target": {"repository": "app", "tag": "1", "digest": "sha256:" + "a" * 64, **target},
            "request": {"host": "localhost:5000"}}
    answer = post_eventgrid([{"id": event_id, "eventType": "Microsoft.ContainerRegistry.ImagePushed",
                              "subject": "s", "data": data, "eventTime": "2026-11-29T00:00:00Z",
                              "dataVersion": "1"}])
    assert answer.status_code == 202, answer.text
    decision = rejected(stack, event_id)
    assert decision is not None and decision.outcome == Outcome.REJECTED


def test_deeply_nested_bodies_get_400_on_every_json_route(api):
    for method, path in (("POST", "/tasks"), ("PATCH", "/tasks/x"), ("POST", "/tasks/x/runs"),
                         ("POST", "/builds"), ("POST", "/hooks/distribution")):
        answer = api(method, path, data=DEEP)
        assert answer.status_code == 400, (path, answer.text)
        assert "nested too deeply" in answer.json()["error"]["message"]
    deep = requests.post(f"{os.environ['BASETRIGGER_URL']}/runtime/webhooks/eventgrid",
                         params={"functionName": "eventgrid_image_pushed",
                                 "code": os.environ["BASETRIGGER_KEY"]},
                         headers={"aeg-event-type": "Notification"}, data=DEEP, timeout=30)
    assert deep.status_code == 400


@pytest.mark.parametrize(("method", "path"), [("GET", "/tasks/a%2Fb"), ("DELETE", "/tasks/..%2Fx"),
                                              ("PATCH", "/tasks/a%2Fb"), ("POST", "/tasks/a%23b/runs")])
def test_task_names_outside_the_pattern_are_refused_before_storage(api, method, path):
    answer = api(method, path, json={})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "InvalidTask"


def test_an_archive_that_would_unpack_huge_gets_413_and_no_run(api):
    zeros = tarfile.TarInfo("zeros")
    zeros.size = 1024**3  # 1 GiB declared; the header alone is enough to refuse it
    bomb = base64.b64encode(gzip.compress(zeros.tobuf() + bytes(4096))).decode()
    before = api("GET", "/runs", params={"top": 1}).json()["runs"]
    answer = api("POST", "/builds", json={"images": ["bomb:{{.Run.ID}}"], "context": bomb})
    assert answer.status_code == 413, answer.text
    assert answer.json()["error"]["code"] == "ContextTooLarge" and "MiB" in answer.json()["error"]["message"]
    assert api("GET", "/runs", params={"top": 1}).json()["runs"] == before


def _tiny_context() -> str:
    import io

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = b"FROM scratch\n"
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.parametrize(("method", "path", "body"), [
    # Run and wave ids with digits that are not ASCII digits (`²`, `①`, `٣`).
    ("GET", "/runs/da%C2%B2", None),
    ("GET", "/runs/da%E2%91%A0/log", None),
    ("POST", "/runs/da%D9%A3/cancel", None),
    ("GET", "/runs?continuation=da%C2%B2", None),
    ("GET", "/waves/w%C2%B2", None),
    ("GET", "/waves?continuation=w%C2%B2", None),
    ("GET", "/runs?task=" + "t" * 300, None),
    # Dockerfile paths no file system takes; contexts that are no directory; a git URL with a NUL.
    ("POST", "/tasks", {"name": "bad-df", "images": ["a:1"], "context": "/tmp", "dockerfile": "a\u0000b"}),
    ("POST", "/tasks", {"name": "bad-df", "images": ["a:1"], "context": "/tmp", "dockerfile": "a" * 300}),
    ("POST", "/tasks", {"name": "bad-df", "images": ["a:1"], "context": "/tmp", "dockerfile": "\ud800"}),
    ("POST", "/tasks", {"name": "bad-ctx", "images": ["a:1"], "context": "~nosuchuser/x"}),
    ("POST", "/tasks", {"name": "bad-ctx", "images": ["a:1"], "context": "/" + "x" * 300}),
    ("POST", "/tasks", {"name": "bad-git", "images": ["a:1"], "context": "https://h.invalid/r\u0000"}),
    ("POST", "/tasks", {"name": "bad-git", "images": ["a:1"],
                        "context": "https://u:tok@h.invalid/r.git"}),
    # Fields too big for a table row, or of the wrong shape.
    ("POST", "/tasks", {"name": "big", "images": ["a:1"], "context": "/tmp",
                        "build_args": {"A": "x" * 40_000}}),
    ("POST", "/tasks", {"name": "big", "images": ["a:1"], "context": "/tmp", "build_args": {"A=B": "x"}}),
    ("POST", "/tasks", {"name": "big", "images": ["a:1"], "context": "/tmp", "build_args": {"A": None}}),
    ("POST", "/tasks", {"name": "plat", "images": ["a:1"], "context": "/tmp",
                        "platform": "linux/\uff41\uff4d\uff44\uff16\uff14"}),
    ("POST", "/builds", {"images": ["a:1"], "context": _tiny_context(), "dockerfile": ["x"]}),
    ("POST", "/builds", {"images": ["a:1"], "context": _tiny_context(), "platform": {"a": 1}}),
    ("POST", "/builds", {"images": ["a:1"], "context": _tiny_context(), "dockerfile": "a\u0000"}),
])
def test_bad_ids_paths_and_fields_get_a_4xx_with_a_message(api, method, path, body):
    answer = api(method, path, json=body) if body is not None else api(method, path)
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text[:300])
    assert answer.json()["error"]["message"]
    assert "tok@" not in answer.text  # a token in a git URL is never echoed


def newest_run_id(api) -> str | None:
    runs = api("GET", "/runs", params={"top": 1}).json()["runs"]
    return runs[0]["run_id"] if runs else None


def _archive_with(*members: tarfile.TarInfo) -> str:
    import io

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = b"FROM scratch\n"
        dockerfile = tarfile.TarInfo("Dockerfile")
        dockerfile.size = len(data)
        tar.addfile(dockerfile, io.BytesIO(data))
        for member in members:
            tar.addfile(member, io.BytesIO(b"x" * member.size) if member.isreg() else None)
    return base64.b64encode(buffer.getvalue()).decode()


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type, member.linkname = kind, link
    member.size = 1 if kind == tarfile.REGTYPE else 0
    return member


@pytest.mark.parametrize("member", [
    _member("../escaped"),
    _member("a/../../escaped"),
    _member("out", tarfile.SYMTYPE, "/etc/passwd"),
    _member("out", tarfile.SYMTYPE, "../../../etc/passwd"),
    _member("dir/", tarfile.SYMTYPE, "../outside"),  # tarfile's own filter judged it from inside dir
    _member("out", tarfile.LNKTYPE, "/etc/passwd"),
    _member("out", tarfile.LNKTYPE, "../outside"),
    _member("out", tarfile.LNKTYPE, "not-in-the-archive"),
    _member("dev", tarfile.CHRTYPE),
], ids=lambda m: f"{m.name}->{m.linkname}" if m.linkname else m.name)
def test_quick_build_archives_with_members_that_escape_are_refused_before_a_run_id(api, member):
    before = newest_run_id(api)
    answer = api("POST", "/builds", json={"images": ["esc:{{.Run.ID}}"], "context": _archive_with(member)})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "InvalidContext"
    assert newest_run_id(api) == before  # no run id spent


def test_a_quick_build_archive_with_links_inside_is_still_built():
    from shared.domain.builds import UnpackLimits, check_archive

    # An absolute name is unpacked under the context, as tar does (the leading `/` is dropped).
    inside = _archive_with(_member("sub/file"), _member("link", tarfile.SYMTYPE, "sub/file"),
                           _member("hard", tarfile.LNKTYPE, "sub/file"), _member("/tmp/absolute"))
    check_archive(base64.b64decode(inside), UnpackLimits())


@pytest.mark.parametrize("field", ["build_args", "secret_args"])
def test_a_nul_byte_in_an_arg_value_is_refused_at_create_and_update(api, field):
    name = f"nul-{uuid.uuid4().hex[:8]}"
    task = {"name": name, "images": ["nul:1"], "context": "/nonexistent/nul",
            "context_archive": _tiny_context()}
    created = api("POST", "/tasks", json={**task, field: {"A": "x\u0000y"}})
    assert created.status_code == 400, created.text
    assert "NUL" in created.json()["error"]["message"] and "x\\u0000y" not in created.text
    assert api("POST", "/tasks", json=task).status_code == 201
    try:
        updated = api("PATCH", f"/tasks/{name}", json={field: {"A": "x\u0000y"}})
        assert updated.status_code == 400, updated.text
        assert "NUL" in updated.json()["error"]["message"]
        assert api("GET", f"/tasks/{name}").json()[field] in ({}, [])  # unchanged
    finally:
        api("DELETE", f"/tasks/{name}")


def test_a_nul_byte_in_an_arg_value_is_refused_on_a_quick_build_before_a_run_id(api):
    before = newest_run_id(api)
    answer = api("POST", "/builds", json={"images": ["nul:{{.Run.ID}}"], "context": _tiny_context(),
                                          "build_args": {"A": "x\u0000y"}})
    assert answer.status_code == 400, answer.text
    assert "NUL" in answer.json()["error"]["message"]
    assert newest_run_id(api) == before  # no run id spent
