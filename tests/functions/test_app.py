"""The app's function table, as the Functions host indexes it, against the OpenAPI document."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import function_app
from devhost.loader import load_functions
from functions.openapi import openapi_document

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
    assert entries["housekeeping"].trigger["schedule"] == "0 */5 * * * *"


def test_every_http_function_needs_a_key():
    for entry in table().entries:
        if entry.trigger_type == "httpTrigger":
            level = str(getattr(entry.trigger["authLevel"], "value", "")).lower()
            assert level in ("function", "admin"), entry.name


def _http_routes() -> set[tuple[str, str]]:
    routes = set()
    for entry in table().entries:
        if entry.trigger_type == "httpTrigger":
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
    code = [line for line in (ROOT / "function_app.py").read_text().splitlines()
            if line.strip() and not line.startswith(("#", '"""', "import", "from"))]
    assert code[0].startswith("app = func.FunctionApp(")
    assert all(line.startswith("app.register_functions(") for line in code[1:])
