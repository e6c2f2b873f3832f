"""HTTP bodies declared once (functions/bodies.py): the OpenAPI document's schema of every body the
API validates is generated from the model its handler validates with, and a body the model refuses
is answered with a 400 whose message names each field, never a value the caller sent.

No stack: the handlers' modules are read, not run; read_body is called with real requests.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import azure.functions as func
import pytest

from functions import bodies
from functions.http import BadRequest, PayloadTooLarge, read_body
from functions.openapi import PAYLOADS, component_schemas, openapi_document

ROOT = Path(__file__).resolve().parents[2]
REF = "#/components/schemas/"


def _route_and_models(module: Path) -> dict[str, set[str]]:
    """Each route a module serves -> the models its handler calls read_body with."""
    found: dict[str, set[str]] = {}
    for node in ast.walk(ast.parse(module.read_text())):
        if not isinstance(node, ast.FunctionDef):
            continue
        routes = [kw.value.value for d in node.decorator_list if isinstance(d, ast.Call)
                  for kw in d.keywords if kw.arg == "route" and isinstance(kw.value, ast.Constant)]
        if not routes:
            continue
        calls = [c for c in ast.walk(node) if isinstance(c, ast.Call)]
        models = {c.args[1].attr if isinstance(c.args[1], ast.Attribute) else c.args[1].id
                  for c in calls if getattr(c.func, "id", None) == "read_body"}
        # Helpers a handler calls with a read body (e.g. trigger_api's _new_timer) read none.
        found["/" + routes[0]] = models
    return found


def handler_models() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for module in sorted((ROOT / "functions").glob("*.py")):
        found.update(_route_and_models(module))
    return found


def documented_models() -> dict[str, set[str]]:
    """Each path -> the models its operations' request bodies name (vendor payloads left out)."""
    payloads = {m.__name__ for m in PAYLOADS}
    found: dict[str, set[str]] = {}
    for path, item in openapi_document()["paths"].items():
        for method, op in item.items():
            if method == "parameters" or "requestBody" not in op:
                continue
            ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            if ref.removeprefix(REF) not in payloads:
                found.setdefault(path, set()).add(ref.removeprefix(REF))
    return found


def test_every_body_a_handler_validates_is_documented_with_the_same_model():
    validated = {route: models for route, models in handler_models().items() if models}
    assert validated, "no handler reads a body with read_body"
    assert validated == documented_models()


def test_every_request_models_schema_in_the_document_is_generated_from_it():
    schemas = component_schemas()
    for model in bodies.REQUESTS:
        generated = model.model_json_schema(ref_template=REF + "{model}")
        generated.pop("$defs", None)
        assert schemas[model.__name__] == generated, model.__name__
        for name in generated.get("required", []):
            assert name in generated["properties"]


def test_every_reference_in_the_document_resolves():
    text = json.dumps(openapi_document())
    refs = {part.split('"')[0] for part in text.split(f'"$ref": "{REF}')[1:]}
    assert refs and refs <= set(component_schemas())


def request(body: bytes) -> func.HttpRequest:
    return func.HttpRequest("POST", "/api/tasks", body=body)


def refusal(model: type, body: object) -> str:
    with pytest.raises(BadRequest) as refused:
        read_body(request(json.dumps(body).encode()), model, 10_000)
    assert not isinstance(refused.value, PayloadTooLarge)
    return str(refused.value)


def test_each_wrong_field_is_named_in_one_message():
    message = refusal(bodies.TaskCreate, {"name": "app", "images": ["a", ""], "context": "/c",
                                          "build_args": {"A": 1}, "base_image_trigger_enabled": "yes"})
    assert "images.1: string should have at least 1 character" in message
    assert "build_args.A must be a valid string" in message
    assert "base_image_trigger_enabled must be a valid boolean" in message


@pytest.mark.parametrize(("model", "body", "expected"), [
    (bodies.TaskCreate, {"images": ["a"]}, "missing field(s): name, context"),
    (bodies.TaskUpdate, {"zz": 1, "aa": 2}, "unknown field(s): zz, aa"),
    (bodies.TaskUpdate, {"update_policy": "sometimes"}, "update_policy must be rebuild or rebase or auto"),
    (bodies.TaskUpdate, {"base_image_trigger_type": "x"}, "base_image_trigger_type must be Runtime or All"),
    (bodies.TaskUpdate, {"context": None}, "context must be a valid string"),
    (bodies.RunRequest, {"force": "true"}, "force must be a valid boolean"),
    (bodies.QuickBuild, {"images": ["a"], "context": "eA==", "platform": {"a": 1}},
     "platform must be a valid string"),
    (bodies.TimerInput, {"enabled": 1}, "enabled must be a valid boolean"),
    (bodies.RebuildRequest, {"image": ""}, "image: string should have at least 1 character"),
])
def test_a_refused_body_says_which_field_and_why(model, body, expected):
    assert expected in refusal(model, body)


@pytest.mark.parametrize(("model", "body"), [
    (bodies.TaskCreate, {"name": "a", "images": ["a"], "context": "/c", "git_access_token": 12345678}),
    (bodies.TaskCreate, {"name": "a", "images": ["a"], "context": "/c", "update_trigger_secret": ["s3cr3t"]}),
    (bodies.CredentialInput, {"login_server": "r.io", "password": {"p": "s3cr3t"}}),
    (bodies.TaskCreate, {"name": "a", "images": ["a"], "context": "/c", "secret_args": {"K": 12345678}}),
])
def test_a_refusal_never_repeats_what_was_sent(model, body):
    message = refusal(model, body)
    assert "12345678" not in message and "s3cr3t" not in message


def test_a_long_key_is_shortened_in_the_message():
    message = refusal(bodies.QuickBuild, {"images": ["a"], "context": "eA==", "build_args": {"K" * 5000: 1}})
    assert len(message) < 200 and "build_args.KKKK" in message


def test_a_patch_changes_only_the_fields_sent_and_a_secret_stays_hidden_in_a_repr():
    body = read_body(request(b'{"git_access_token": "tok-123", "update_policy": "auto"}'),
                     bodies.TaskUpdate, 10_000)
    assert body.given() == {"git_access_token": "tok-123", "update_policy": "auto"}
    assert "tok-123" not in repr(body)


def test_bodies_keep_their_size_nesting_and_shape_answers():
    with pytest.raises(PayloadTooLarge):
        read_body(request(b'{"force": true}' + b" " * 100), bodies.RunRequest, 50)
    assert "nested too deeply" in refusal_raw(b'{"a":' * 10_000 + b"1" + b"}" * 10_000)
    assert "must be a JSON object" in refusal_raw(b"[1]")
    assert read_body(request(b""), bodies.RunRequest, 50).force is False


def refusal_raw(raw: bytes) -> str:
    with pytest.raises(BadRequest) as refused:
        read_body(request(raw), bodies.RunRequest, 10**6)
    return str(refused.value)
