"""Helpers every HTTP adapter uses: JSON bodies in, JSON answers and `{"error": ...}` out."""

from __future__ import annotations

import json
from typing import Any

import azure.functions as func


class BadRequest(ValueError):
    """The caller sent something unusable; the message says what."""


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(data), status_code=status, mimetype="application/json",
                             headers=headers)


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return json_response({"error": {"code": code, "message": message}}, status, headers)


def parse_json(body: bytes) -> Any:
    """JSON from a request body; BadRequest for anything that is not JSON or is nested too deeply
    for the parser (`{"a":` ten thousand times deep is the caller's mistake, not a crash)."""
    try:
        return json.loads(body)
    except RecursionError:
        raise BadRequest("the body is nested too deeply") from None
    except ValueError as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from exc


def json_body(req: func.HttpRequest, max_bytes: int) -> dict[str, Any]:
    body = req.get_body()
    if len(body) > max_bytes:
        raise PayloadTooLarge(f"the body exceeds {max_bytes} bytes")
    if not body:
        return {}
    data = parse_json(body)
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    return data


class PayloadTooLarge(BadRequest):
    pass


def int_param(req: func.HttpRequest, name: str, default: int, low: int, high: int) -> int:
    raw = req.params.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise BadRequest(f"{name} must be a whole number") from exc
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}")
    return value
