"""The app's function table, as the Functions host indexes it, against the OpenAPI document."""

from __future__ import annotations

import ast
import json
import re
from functools import lru_cache
from pathlib import Path

import function_app
from devhost.loader import load_functions
from functions.dashboard import serve
from functions.openapi import openapi_document
from shared.domain.vocabulary import WAITING, RunStatus

ROOT = Path(__file__).resolve().parents[2]


@lru_cache(maxsize=1)
def table():
    # get_functions() may run once per app instance: every test shares this one table.
    return load_functions(function_app.app)


def by_name():
    return {entry.name: entry for entry in table().entries}


def test_every_trigger_kind_is_there_under_its_contract_name():
    entries = by_name()
    assert not table().errors
    assert entries["eventgrid_image_pushed"].trigger_type == "eventGridTrigger"
    assert entries["distribution_webhook"].trigger["route"] == "hooks/distribution"
    assert entries["build_worker"].trigger["queueName"] == "%BASETRIGGER_BUILD_QUEUE%"
    assert entries["build_poison"].trigger["queueName"] == "%BASETRIGGER_BUILD_QUEUE%-poison"
    assert entries["housekeeping"].trigger["schedule"] == "0 * * * * *"


# Web pages, not the API: static files with no data in them, served without a key (a browser
# cannot send a header when it opens a page); every data call they make needs the key.
PAGES = {"dashboard"}
# Webhooks whose senders cannot send our key: each checks a secret of its own (Harbor's auth header,
# GitHub's HMAC signature); tests/functions/test_webhooks.py shows they refuse everything else.
OWN_AUTH = {"harbor_webhook", "github_webhook", "gitlab_webhook"}


def test_every_http_function_needs_a_key():
    for entry in table().entries:
        if entry.trigger_type == "httpTrigger" and entry.name not in PAGES | OWN_AUTH:
            level = str(getattr(entry.trigger["authLevel"], "value", "")).lower()
            assert level in ("function", "admin"), entry.name


def _http_routes() -> set[tuple[str, str]]:
    routes = set()
    for entry in table().entries:
        if entry.trigger_type == "httpTrigger" and entry.name not in PAGES:
            for method in entry.trigger["methods"]:
                routes.add(("/" + entry.trigger["route"], str(method).lower()))
    return routes


def test_openapi_document_describes_exactly_the_real_routes():
    documented = {
        (path, method)
        for path, item in openapi_document()["paths"].items()
        for method in item if method in ("get", "post", "put", "patch", "delete")
    }
    assert documented == _http_routes()


def test_openapi_path_parameters_match_route_parameters():
    for path, item in openapi_document()["paths"].items():
        declared = {p["name"] for p in item.get("parameters", []) if p["in"] == "path"}
        assert declared == set(re.findall(r"\{(\w+)\}", path)), path


def test_shared_never_imports_azure_functions():
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "shared").rglob("*.py")
                 if re.search(r"^\s*(import|from)\s+azure\.functions", p.read_text(), re.M)]
    assert offenders == []


def test_function_app_holds_only_the_app_and_registrations():
    body = [node for node in ast.parse((ROOT / "function_app.py").read_text()).body
            if not isinstance(node, ast.Import | ast.ImportFrom)
            and not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))]
    code = [ast.unparse(node) for node in body]
    assert code[0].startswith("app = func.FunctionApp(")
    assert all(line.startswith("app.register_functions(") for line in code[1:])


def test_the_dashboard_is_open_but_serves_only_its_own_files():
    entry = by_name()["dashboard"]
    assert str(getattr(entry.trigger["authLevel"], "value", "")).lower() == "anonymous"
    assert {str(getattr(m, "value", m)).upper() for m in entry.trigger["methods"]} == {"GET"}
    page = serve("", "http://h/api/dashboard/")
    assert page.status_code == 200 and b"<html" in page.get_body()
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert serve("", "http://h/api/dashboard").headers["Location"] == "dashboard/"
    for path in ("../function_app.py", "..%2Ffunction_app.py", "nested/app.js", "missing.js", ".hidden.js"):
        assert serve(path, f"http://h/api/dashboard/{path}").status_code == 404, path


def test_the_dashboard_takes_its_status_words_from_the_app():
    words = json.loads(serve("vocabulary.json", "http://h/api/dashboard/vocabulary.json").get_body())
    assert set(words["runStatuses"]) == {s.value for s in RunStatus}
    assert words["terminal"] == [s for s in words["runStatuses"] if RunStatus(s).terminal]
    assert words["runStatuses"][:len(words["terminal"])] == words["terminal"]  # the bar's order
    assert words["memberStandings"] == [WAITING]
    script = (ROOT / "dashboard" / "app.js").read_text() + (ROOT / "dashboard" / "index.html").read_text()
    # The page keeps no list of its own: no run status appears as an <option> or in a Set literal.
    assert "<option>Succeeded</option>" not in script and '"Timeout"' not in script
