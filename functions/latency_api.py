"""HTTP API for patch latency (see docs/api.md; shared.domain.latency):

    GET /api/bases/latency?since=7d&slo=12h   p50, p95 and the worst case from base push to the last
                                              dependent pushed, per base and overall, and the
                                              dependents that missed the SLO or are on an old digest
"""

from __future__ import annotations

import azure.functions as func

from functions.http import BadRequest, api_handler, json_response
from shared.bootstrap import services
from shared.domain.latency import DEFAULT_SINCE, DEFAULT_SLO, parse_duration

bp = func.Blueprint()


@bp.function_name("api_base_latency")
@bp.route(route="bases/latency", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@api_handler
def api_base_latency(req: func.HttpRequest) -> func.HttpResponse:
    unknown = set(req.params) - {"since", "slo", "code"}  # `code`: the function key, when in the query
    if unknown:
        raise BadRequest(f"unknown parameter(s): {', '.join(sorted(unknown))} (since, slo)")
    since = parse_duration(req.params.get("since"), "since", DEFAULT_SINCE)
    slo = parse_duration(req.params.get("slo"), "slo", DEFAULT_SLO)
    return json_response(services().latency.report(since, slo).to_dict())
