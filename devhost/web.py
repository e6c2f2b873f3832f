"""What every HTTP endpoint of devhost shares: JSON error responses and the request-body limit.

The Functions host refuses bodies over 100 MB (`FUNCTIONS_REQUEST_BODY_SIZE_LIMIT` changes it) with
413. The limit is checked against Content-Length first and again while streaming, so a chunked
upload cannot get past it and an oversized body is never held in memory.
"""

from __future__ import annotations

from aiohttp import web

DEFAULT_MAX_BODY_BYTES = 100 * 1024 * 1024
_CHUNK = 64 * 1024


class BodyTooLarge(Exception):
    pass


# The `code` of each status devhost answers itself (the app's own errors carry codes of their own).
_CODES = {400: "BadRequest", 401: "Unauthorized", 404: "NotFound", 405: "MethodNotAllowed",
          413: "PayloadTooLarge", 500: "InternalServerError"}


def error_response(status: int, message: str, **extra: str) -> web.Response:
    """`{"error": {"code", "message"}}`, the shape the app's own errors have (docs/api.md)."""
    error = {"code": _CODES.get(status, "Error"), "message": message, **extra}
    return web.json_response({"error": error}, status=status)


def too_large_response(limit: int) -> web.Response:
    return error_response(413, f"request body exceeds the limit of {limit} bytes")


async def read_body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge
    body = bytearray()
    async for chunk in request.content.iter_chunked(_CHUNK):
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge
    return bytes(body)
