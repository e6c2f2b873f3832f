"""HTTP API for waves (see docs/api.md): what one base change rebuilt, in order, and its brakes.

    GET  /api/waves                    newest first (`top`, `continuation`)
    GET  /api/waves/{wave_id}          the wave, its counts and its members by level
    POST /api/waves/{wave_id}/cancel   stop what has not run
    POST /api/waves/{wave_id}/resume   a wave its circuit breaker held goes on
    POST /api/bases/rebuild            a wave of everything built FROM an image, as a change would
"""

from __future__ import annotations

import azure.functions as func

from functions.bodies import RebuildRequest
from functions.http import MAX_JSON_BYTES, BadRequest, api_handler, int_param, json_response, read_body
from shared.bootstrap import services
from shared.domain.events import MalformedEvent
from shared.domain.image_ref import InvalidReference

bp = func.Blueprint()


def _is_wave_id(text: str) -> bool:
    digits = text[1:]
    return text.startswith("w") and digits.isascii() and digits.isdigit() and len(digits) <= 12


def _wave_id(req: func.HttpRequest) -> str:
    wave_id: str = req.route_params["wave_id"]
    if not _is_wave_id(wave_id):
        raise BadRequest(f"{wave_id!r} is not a wave id (w<number>)")
    return wave_id


def _wave_answer(wave_id: str) -> func.HttpResponse:
    coordinator = services().waves
    wave, _ = coordinator.waves.get(wave_id)
    members = sorted(coordinator.members(wave), key=lambda m: (m.level, m.task))
    return json_response({**wave.to_dict(), "members": [
        {"task": m.task, "run_id": m.run_id, "level": m.level, "waits_for": m.waits_for,
         "released": m.released, "outcome": m.outcome} for m in members]})


@bp.function_name("api_waves")
@bp.route(route="waves", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@api_handler
def api_waves(req: func.HttpRequest) -> func.HttpResponse:
    after = req.params.get("continuation") or None
    if after and not _is_wave_id(after):
        raise BadRequest(f"continuation {after!r} is not a wave id from a previous page")
    waves, continuation = services().waves.waves.newest(top=int_param(req, "top", 15, 1, 200), after=after)
    return json_response({"waves": [w.to_dict() for w in waves], "continuation": continuation})


@bp.function_name("api_wave")
@bp.route(route="waves/{wave_id}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@api_handler
def api_wave(req: func.HttpRequest) -> func.HttpResponse:
    return _wave_answer(_wave_id(req))


@bp.function_name("api_wave_cancel")
@bp.route(route="waves/{wave_id}/cancel", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@api_handler
def api_wave_cancel(req: func.HttpRequest) -> func.HttpResponse:
    wave_id = _wave_id(req)
    services().waves.cancel(wave_id)
    return _wave_answer(wave_id)


@bp.function_name("api_wave_resume")
@bp.route(route="waves/{wave_id}/resume", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@api_handler
def api_wave_resume(req: func.HttpRequest) -> func.HttpResponse:
    wave_id = _wave_id(req)
    services().waves.resume(wave_id)
    return _wave_answer(wave_id)


@bp.function_name("api_base_rebuild")
@bp.route(route="bases/rebuild", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@api_handler
def api_base_rebuild(req: func.HttpRequest) -> func.HttpResponse:
    body = read_body(req, RebuildRequest, MAX_JSON_BYTES)
    try:
        decision = services().ingest.rebuild(body.image, body.digest)
    except (InvalidReference, MalformedEvent) as exc:
        raise BadRequest(str(exc)) from exc
    return json_response(decision.to_dict(), 202)
