"""Git hosts' webhooks for source triggers (shared/service_layer/source_triggers.py):

- GitHub `push` / `pull_request`: on `POST /api/hooks/github` (functions/webhooks_github.py checks
  X-Hub-Signature-256 first, then hands them here);
- GitLab `Push Hook`: `POST /api/hooks/gitlab`, anonymous to the host, X-Gitlab-Token must equal
  BASETRIGGER_GITLAB_WEBHOOK_TOKEN (constant time); without the setting it accepts nothing;
- Azure Repos service hooks (`git.push`, `git.pullrequest.created|updated`): `POST
  /api/hooks/azure-repos`, with the function key (as ?code= in the hook's URL).

Each answers with the decisions taken, 400 for a payload that cannot be read (recorded as rejected).
"""

import hmac

import azure.functions as func

from functions.http import error
from functions.webhook_common import Refused, decisions_answer, payload_json, refuse
from shared.adapters.ingress.git_sources import from_azure_repos, from_github, from_gitlab
from shared.bootstrap import services
from shared.domain.events import Rejected, printable_id
from shared.domain.vocabulary import EventSource

bp = func.Blueprint()

GITHUB_SOURCE_EVENTS = ("push", "pull_request")


def github_source(req: func.HttpRequest, kind: str, delivery: str | None) -> func.HttpResponse:
    """A signed GitHub push or pull_request (the signature was checked by the caller)."""
    try:
        data = payload_json(req, EventSource.GITHUB, printable_id(f"github:{delivery or ''}"))
    except Refused as refused:
        return refused.answer
    event = from_github(kind, delivery, data)
    if isinstance(event, Rejected):
        return refuse(event)
    return decisions_answer(lambda: services().source_triggers.handle(event))


@bp.function_name("gitlab_webhook")
@bp.route(route="hooks/gitlab", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def gitlab_webhook(req: func.HttpRequest) -> func.HttpResponse:
    token = services().settings.gitlab_webhook_token
    if not token:
        return error(403, "NotConfigured",
                     "BASETRIGGER_GITLAB_WEBHOOK_TOKEN is not set: this route accepts nothing")
    given = req.headers.get("X-Gitlab-Token") or ""
    if not hmac.compare_digest(token.encode(), given.encode()):
        return error(401, "Unauthorized", "X-Gitlab-Token is not the configured token")
    kind = req.headers.get("X-Gitlab-Event")
    try:
        data = payload_json(req, EventSource.GITLAB, "(gitlab payload)")
    except Refused as refused:
        return refused.answer
    event = from_gitlab(kind, data)
    if isinstance(event, Rejected):
        return refuse(event)
    return decisions_answer(lambda: services().source_triggers.handle(event))


@bp.function_name("azure_repos_webhook")
@bp.route(route="hooks/azure-repos", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def azure_repos_webhook(req: func.HttpRequest) -> func.HttpResponse:
    try:
        data = payload_json(req, EventSource.AZURE_REPOS, "(azure repos payload)")
    except Refused as refused:
        return refused.answer
    event = from_azure_repos(data)
    if isinstance(event, Rejected):
        return refuse(event)
    return decisions_answer(lambda: services().source_triggers.handle(event))
