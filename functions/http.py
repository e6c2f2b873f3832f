"""Helpers every HTTP adapter uses: JSON bodies in (checked against their models in
functions/bodies.py), JSON answers and `{"error": ...}` out, the `api_handler` decorator that maps
domain errors to status codes once for every handler, and entity tags (ETag, If-Match,
If-None-Match) for stored versions."""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import re
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import azure.functions as func
import pydantic
from azure.core.exceptions import ServiceRequestError, ServiceResponseError

from shared.adapters.secret_box import SecretsUnavailable
from shared.domain.builds import ContextError, ContextTooLarge
from shared.domain.credentials import CredentialError
from shared.domain.decisions import EventBusy
from shared.domain.latency import InvalidDuration
from shared.domain.quarantine import InvalidQuarantine, NotQuarantined, Quarantined
from shared.domain.runs import RunConflict, RunNotCancelable, RunNotFound
from shared.domain.tasks import (
    ContextUploadNeeded,
    ExpectedVersion,
    GraphChanged,
    TaskChanged,
    TaskError,
    TaskExists,
    TaskNotFound,
)
from shared.domain.waves import WaveConflict, WaveNotFound
from shared.service_layer.credentials import CredentialExists, CredentialNotFound
from shared.service_layer.dispatch import DispatchIncomplete
from shared.service_layer.scheduling import InvalidContinuation
from shared.service_layer.task_timers import TimerNotFound

Params = ParamSpec("Params")
Body = TypeVar("Body", bound=pydantic.BaseModel)

RETRY_AFTER_SECONDS = 10

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


def read_body(req: func.HttpRequest, model: type[Body], max_bytes: int) -> Body:
    """The request's JSON body as `model` (an empty body is `{}`); PayloadTooLarge or BadRequest,
    whose message names each field that is wrong and never repeats a value the caller sent."""
    data = json_body(req, max_bytes)
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise BadRequest(validation_message(exc)) from None


def _field(loc: tuple[int | str, ...]) -> str:
    # A key of a sent map is the caller's text: shortened, so an answer never grows with it.
    return ".".join(str(part) if len(str(part)) <= 40 else f"{str(part)[:40]}…" for part in loc)


def validation_message(exc: pydantic.ValidationError) -> str:
    """One readable sentence per problem: `unknown field(s): a, b`, `missing field(s): name`,
    `images.0 must be a valid string`, `update_policy must be rebuild or rebase or auto`."""
    errors = exc.errors(include_url=False, include_input=False)
    unknown = [_field(e["loc"]) for e in errors if e["type"] == "extra_forbidden"]
    missing = [_field(e["loc"]) for e in errors if e["type"] == "missing"]
    parts = [f"unknown field(s): {', '.join(unknown)}"] if unknown else []
    parts += [f"missing field(s): {', '.join(missing)}"] if missing else []
    for e in errors:
        if e["type"] in ("extra_forbidden", "missing"):
            continue
        field, msg = _field(e["loc"]), e["msg"]
        if e["type"] == "enum":  # "'rebuild', 'rebase' or 'auto'" -> "rebuild or rebase or auto"
            msg = "Input should be " + str(e["ctx"]["expected"]).replace("'", "").replace(", ", " or ")
        if not field:
            parts.append(msg)
        elif msg.startswith("Input should be "):
            parts.append(f"{field} must be {msg.removeprefix('Input should be ')}")
        else:
            parts.append(f"{field}: {msg[0].lower()}{msg[1:]}")
    return "; ".join(parts)


_ERRORS: list[tuple[type[Exception], int, str]] = [
    (PayloadTooLarge, 413, "PayloadTooLarge"),
    (BadRequest, 400, "BadRequest"),
    (InvalidContinuation, 400, "BadRequest"),
    (TaskNotFound, 404, "TaskNotFound"),
    (RunNotFound, 404, "RunNotFound"),
    (TaskExists, 409, "TaskExists"),
    # If-Match named another version than the stored one: nothing was written.
    (TaskChanged, 412, "PreconditionFailed"),
    (RunNotCancelable, 409, "RunNotCancelable"),
    (TimerNotFound, 404, "TimerNotFound"),
    (RunConflict, 409, "Conflict"),
    (ContextUploadNeeded, 400, "ContextUploadNeeded"),  # before TaskError, which it is
    (TaskError, 400, "InvalidTask"),
    (WaveNotFound, 404, "WaveNotFound"),
    # A run that would build on a quarantined base digest: `quarantined: <reason>`.
    (Quarantined, 409, "Quarantined"),
    (InvalidQuarantine, 400, "InvalidQuarantine"),
    (NotQuarantined, 404, "NotQuarantined"),
    (InvalidDuration, 400, "InvalidDuration"),  # `since`/`slo` of the latency report
    (WaveConflict, 409, "WaveConflict"),
    # Another delivery of the same push is being dispatched right now: try again in a moment.
    (EventBusy, 503, "Busy"),
    # Some events of the request could not be dispatched (storage trouble): ask again.
    (DispatchIncomplete, 503, "DispatchFailed"),
    # Other tasks kept being created or changed while this one was checked for cycles.
    (GraphChanged, 503, "Busy"),
    (ContextTooLarge, 413, "ContextTooLarge"),
    (ContextError, 400, "InvalidContext"),
    (CredentialExists, 409, "CredentialExists"),  # before CredentialError, which it is
    (CredentialError, 400, "InvalidCredential"),
    (CredentialNotFound, 404, "CredentialNotFound"),
    # The service's own key is missing or wrong: not the caller's mistake.
    (SecretsUnavailable, 503, "SecretsUnavailable"),
]


def api_handler(handler: Callable[Params, func.HttpResponse]) -> Callable[Params, func.HttpResponse]:
    """`handler` with the domain's errors answered as `{"error": {"code", "message"}}` and their
    status (_ERRORS), and storage that does not answer as a 503 to try again."""

    @functools.wraps(handler)
    def wrapper(*args: Params.args, **kwargs: Params.kwargs) -> func.HttpResponse:
        try:
            return handler(*args, **kwargs)
        except tuple(e for e, _, _ in _ERRORS) as exc:
            status, code = next((s, c) for e, s, c in _ERRORS if isinstance(exc, e))
            headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status == 503 else None
            if isinstance(exc, TaskChanged) and exc.etag:
                headers = {"ETag": entity_tag(exc.etag)}  # the version to read, merge onto and send again
            return error(status, code, str(exc), headers=headers)
        except (ServiceRequestError, ServiceResponseError) as exc:
            # Storage does not answer: not the caller's mistake, and worth trying again soon.
            logging.warning("storage unavailable: %s", exc.__class__.__name__)
            return error(503, "StorageUnavailable", "storage is not answering; try again shortly",
                         headers={"Retry-After": str(RETRY_AFTER_SECONDS)})

    return wrapper


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
