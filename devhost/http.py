"""HTTP triggers: `/<routePrefix>/<route>` in, `azure.functions.HttpRequest` to the function, its
`HttpResponse` back out.

Order of checks follows the host: route (404), method (405), key (401), body limit (413), then the
invocation. An exception in the function answers a generic 500 carrying only the invocation id;
the traceback stays in the log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import azure.functions as func
from aiohttp import web
from multidict import CIMultiDict

from .auth import presents_key, requires_key
from .invocation import Invoker
from .loader import FunctionEntry
from .routes import RouteTemplate
from .web import BodyTooLarge, error_response, read_body, too_large_response

log = logging.getLogger("devhost.http")

# aiohttp sets these itself from the body it sends; copying the function's values could contradict it.
_HOP_BY_HOP = {"content-length", "transfer-encoding", "connection"}


@dataclass(frozen=True)
class HttpRoute:
    entry: FunctionEntry
    template: RouteTemplate
    methods: frozenset[str] | None  # None: every method, as when a trigger lists none
    auth_level: str

    @classmethod
    def of(cls, entry: FunctionEntry) -> HttpRoute:
        # A trigger without a route is served at the function's name, as the host does.
        template = RouteTemplate.parse(entry.trigger.get("route") or entry.name)
        methods = entry.trigger.get("methods")
        return cls(
            entry=entry,
            template=template,
            methods=frozenset(str(m).upper() for m in methods) if methods else None,
            auth_level=str(entry.trigger.get("authLevel") or "FUNCTION").upper(),
        )

    def allows(self, method: str) -> bool:
        return self.methods is None or method in self.methods


def _headers(request: web.Request) -> dict[str, str]:
    """Repeated headers joined with ", ", which is how the host hands them to the worker."""
    joined: dict[str, str] = {}
    for name, value in request.headers.items():
        key = name.lower()
        joined[key] = f"{joined[key]}, {value}" if key in joined else value
    return joined


def to_azure_request(request: web.Request, body: bytes, route_params: dict[str, str]) -> func.HttpRequest:
    return func.HttpRequest(
        method=request.method,
        url=str(request.url),
        headers=_headers(request),
        # For a repeated query parameter the first value wins.
        params={k: request.query.getone(k) for k in request.query.keys()},
        route_params=route_params,
        body=body,
    )


def to_aiohttp_response(value: object) -> web.Response:
    if value is None:
        return web.Response(status=204)
    if isinstance(value, str | bytes):
        return web.Response(
            body=value if isinstance(value, bytes) else value.encode(),
            content_type="text/plain",
            charset="utf-8",
        )
    if not isinstance(value, func.HttpResponse):
        raise TypeError(f"an HTTP function returned {type(value).__name__}, not HttpResponse")
    headers = CIMultiDict((k, v) for k, v in value.headers.items() if k.lower() not in _HOP_BY_HOP)
    if "content-type" not in headers:
        # Same rule as azure.functions' HttpResponseConverter: charset only for text types.
        mimetype = value.mimetype
        headers["Content-Type"] = (
            f"{mimetype}; charset={value.charset}" if mimetype.startswith("text/") else mimetype
        )
    return web.Response(status=value.status_code, headers=headers, body=value.get_body())


class HttpTriggers:
    def __init__(
        self, routes: list[HttpRoute], route_prefix: str, key: str, max_body_bytes: int, invoker: Invoker
    ) -> None:
        # Most specific template first, so `runs/latest` wins over `runs/{id}`.
        self.routes = sorted(routes, key=lambda r: (r.template.precedence, r.entry.name))
        self._prefix = route_prefix.strip("/")
        self._key = key
        self._max_body_bytes = max_body_bytes
        self._invoker = invoker

    def url_path(self, route: HttpRoute) -> str:
        return "/" + "/".join(p for p in (self._prefix, route.template.template.strip("/")) if p)

    def _strip_prefix(self, raw_path: str) -> str | None:
        path = raw_path.strip("/")
        if not self._prefix:
            return path
        if path.lower() == self._prefix.lower():
            return ""
        if path.lower().startswith(self._prefix.lower() + "/"):
            return path[len(self._prefix) + 1 :]
        return None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = self._strip_prefix(request.rel_url.raw_path)
        matches = (
            [] if path is None else [(r, p) for r in self.routes if (p := r.template.match(path)) is not None]
        )
        if not matches:
            return error_response(404, "no function serves this path")
        allowed = [(r, p) for r, p in matches if r.allows(request.method)]
        if not allowed:
            response = error_response(405, f"method {request.method} not allowed")
            response.headers["Allow"] = ", ".join(sorted(set().union(*(r.methods or () for r, _ in matches))))
            return response
        route, route_params = allowed[0]

        if requires_key(route.auth_level) and not presents_key(request, self._key):
            return error_response(
                401, "a function key is required (x-functions-key header or code= parameter)"
            )
        try:
            body = await read_body(request, self._max_body_bytes)
        except BodyTooLarge:
            return too_large_response(self._max_body_bytes)

        outcome = await self._invoker.invoke(
            route.entry,
            to_azure_request(request, body, route_params),
            reason="This function was programmatically called via the host APIs.",
        )
        if outcome.succeeded:
            try:
                return to_aiohttp_response(outcome.value)
            except TypeError:
                log.exception("Function '%s' returned something devhost cannot send", route.entry.name)
        return error_response(500, "internal server error", invocationId=outcome.invocation_id)
