"""Function keys.

The Functions host has function, host, master and system keys. Locally one key stands in for all of
them (`DEVHOST_KEY` or `--key`): it opens FUNCTION and ADMIN level HTTP triggers and the Event Grid
webhook. Like the host, the key is accepted in the `x-functions-key` header or the `code` query
parameter.
"""

from __future__ import annotations

import hmac

from aiohttp import web

KEY_HEADER = "x-functions-key"
KEY_QUERY = "code"


def requires_key(auth_level: str | None) -> bool:
    # The host's default level is FUNCTION; only ANONYMOUS opens a function to everyone.
    return str(auth_level or "FUNCTION").upper() != "ANONYMOUS"


def presents_key(request: web.Request, key: str) -> bool:
    presented = request.headers.get(KEY_HEADER) or request.query.get(KEY_QUERY) or ""
    return hmac.compare_digest(presented.encode(), key.encode())
