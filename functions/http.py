"""Helpers every HTTP adapter uses: JSON bodies in, JSON answers and `{"error": ...}` out, and
entity tags (ETag, If-Match, If-None-Match) for stored versions."""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

import azure.functions as func

from shared.domain.tasks import ExpectedVersion

# The largest request body each kind of route reads (a larger one is a 413, read no further).
# API bodies are a task's or a timer's fields: 256 KiB is generous. Webhook payloads are larger: a
# distribution envelope batches events, a git push lists its commits; 1 MiB is generous for them.
# (A quick build's inline context has its own limit, functions/api.py MAX_BUILD_BYTES.)
MAX_JSON_BYTES = 256 * 1024
MAX_WEBHOOK_BYTES = 1024 * 1024


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


# ---- entity tags (RFC 9110 section 8.8.3 and 13.1) -------------------------------------------------
# The tag of a stored version is strong: every write of the row changes the storage's etag and an
# answer is computed from the row alone, so one tag always stands for one byte-identical answer;
# and If-Match compares strongly, so a weak tag could never satisfy it. The storage's etag goes in
# base64url: opaque to clients, and free of the quotes and characters a tag cannot hold.
_TAG = r'(?:W/)?"[\x21\x23-\x7e]*"'
_TAG_LIST = re.compile(rf"\s*{_TAG}\s*(?:,\s*{_TAG}\s*)*")
_ONE_TAG = re.compile(r'(W/)?"([\x21\x23-\x7e]*)"')


def entity_tag(etag: str) -> str:
    """The HTTP entity tag (quoted, strong) of the storage's etag `etag`."""
    return '"' + base64.urlsafe_b64encode(etag.encode()).decode("ascii").rstrip("=") + '"'


def _storage_etag(opaque: str) -> str | None:
    """The storage's etag inside an entity tag; None for a tag this service never handed out."""
    try:
        etag = base64.urlsafe_b64decode(opaque + "=" * (-len(opaque) % 4)).decode()
    except (binascii.Error, ValueError):
        return None
    # The decoder skips characters outside its alphabet: only a tag it gives back exactly is ours.
    return etag if entity_tag(etag) == f'"{opaque}"' else None


def _tags(req: func.HttpRequest, header: str) -> list[tuple[bool, str]] | None:
    """The header's entity tags as (weak, opaque-tag); None when it is absent, [] for `*`;
    BadRequest when it is neither `*` nor a list of quoted tags."""
    value = req.headers.get(header)
    if value is None:
        return None
    if value.strip() == "*":
        return []
    if not _TAG_LIST.fullmatch(value):
        raise BadRequest(f'{header} must be * or a list of quoted entity tags, e.g. "abc" (as ETag gives)')
    return [(bool(weak), tag) for weak, tag in _ONE_TAG.findall(value)]


def if_match(req: func.HttpRequest) -> ExpectedVersion | None:
    """The versions an If-Match header accepts: None without one. Compared strongly: a weak tag
    (W/"...") matches nothing, nor does a tag this service never gave."""
    tags = _tags(req, "If-Match")
    if tags is None:
        return None
    if not tags:
        return ExpectedVersion(any_version=True)
    etags = (_storage_etag(tag) for weak, tag in tags if not weak)
    return ExpectedVersion(etags=frozenset(e for e in etags if e is not None))


def none_match(req: func.HttpRequest, etag: str) -> bool:
    """Whether If-None-Match names the version `etag` (or is `*`): the client has it already.
    Compared weakly, as RFC 9110 says for If-None-Match."""
    tags = _tags(req, "If-None-Match")
    if tags is None:
        return False
    return not tags or any(_storage_etag(tag) == etag for _, tag in tags)
