"""The dashboard: static files of `dashboard/` served by the app itself at /api/dashboard/.

The files hold no data and no key, so they are served without a function key (a browser cannot send
a header when it opens a page). Every data call the page makes goes to the API with the key the user
gives it (typed in, or in the URL fragment, which browsers never send to the server), so without a
key the page loads but shows nothing but the API's 401. Nothing is fetched from a CDN: the page's
script and styles are these files. Only files directly in `dashboard/` with a known type are served.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import azure.functions as func

from shared.domain.vocabulary import status_words

bp = func.Blueprint()

ROOT = Path(__file__).resolve().parents[1] / "dashboard"
TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml",
         ".png": "image/png", ".ico": "image/x-icon"}
_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")
HEADERS = {
    # The page talks only to this app; nothing inline, nothing from elsewhere.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
                               "base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Small files, and a deployment changes them: always revalidate.
    "Cache-Control": "no-cache",
}


def _not_found() -> func.HttpResponse:
    return func.HttpResponse("not found", status_code=404, mimetype="text/plain", headers=dict(HEADERS))


@bp.function_name("dashboard")
@bp.route(route="dashboard/{*path}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def dashboard(req: func.HttpRequest) -> func.HttpResponse:
    return serve(req.route_params.get("path") or "", req.url)


def serve(path: str, url: str) -> func.HttpResponse:
    """The answer for `dashboard/<path>` requested as `url`."""
    name = path.strip("/")
    if not name:
        if not url.split("?", 1)[0].endswith("/"):
            # Relative links (`app.js`, `../runs`) need the page at `dashboard/`.
            return func.HttpResponse(status_code=308, headers={**HEADERS, "Location": "dashboard/"})
        name = "index.html"
    if name == "vocabulary.json":
        # The status words the page shows, from the definitions the API uses (no copy in the page).
        return func.HttpResponse(json.dumps(status_words()), status_code=200, mimetype="application/json",
                                 charset="utf-8", headers=dict(HEADERS))
    file = ROOT / name
    if not _NAME.match(name) or file.suffix not in TYPES or not file.is_file():
        return _not_found()
    return func.HttpResponse(file.read_bytes(), status_code=200, mimetype=TYPES[file.suffix],
                             charset="utf-8", headers=dict(HEADERS))
