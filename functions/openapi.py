"""The OpenAPI 3.1 document of the HTTP API (served at /api/openapi.json, checked against the routes).

Paths, operations and parameters are written here; every body's schema (requests and answers) is
generated from its model in functions/bodies.py, the same model the handler validates with.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from functions import bodies as b
from shared.domain.vocabulary import RunStatus, names

_COMPONENTS = "#/components/schemas/{model}"
# Answers the document names; the request models are bodies.REQUESTS.
ANSWERS: tuple[type[BaseModel], ...] = (
    b.Error, b.Task, b.TaskList, b.Run, b.RunList, b.Decision, b.DecisionList, b.WebhookDecisions,
    b.Credential, b.CredentialList, b.Base, b.BaseList, b.Wave, b.WaveList, b.WaveDetail, b.Timer,
    b.TimerList, b.BaseChange, b.Quarantine, b.QuarantineList, b.SettlingList, b.SettledList,
    b.Quarantined, b.LatencyReport, b.Impact, b.Graph, b.StaleReport,
    b.TaskDecisions, b.ResealReport, b.MigrationReport, b.AnyObject,
)
# Request bodies the API reads without a model of its own: a vendor's payload, parsed by its
# webhook (functions/webhooks_*.py), and the distribution registry's envelope.
PAYLOADS: tuple[type[BaseModel], ...] = (b.DistributionNotification, b.AnyObject)


@cache
def component_schemas() -> dict[str, Any]:
    """components/schemas: every model's JSON Schema, and the enums and parts they use."""
    _, top = models_json_schema(
        [(m, "validation") for m in (*b.REQUESTS, *PAYLOADS)] + [(m, "serialization") for m in ANSWERS],
        ref_template=_COMPONENTS,
    )
    return dict(top["$defs"])


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _COMPONENTS.format(model=model.__name__)}


def _ok(model: type[BaseModel], status: str = "200", description: str = "OK") -> dict[str, Any]:
    return {status: {"description": description, "content": {"application/json": {"schema": _ref(model)}}}}


def _json_body(model: type[BaseModel], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": _ref(model)}}}


def _errors(*statuses: str) -> dict[str, Any]:
    names = {"400": "Invalid input", "401": "Missing or wrong function key",
             "403": "The route is not configured (its secret setting is empty)", "404": "Not found",
             "409": "Conflict",
             "412": "The task is at another version than If-Match names (or kept changing): nothing changed",
             "413": "Body too large",
             "422": "The image's registry could not be read (unreachable, refused, too slow)"}
    return {s: {"description": names[s], "content": {"application/json": {"schema": _ref(b.Error)}}}
            for s in ("401", *statuses)}


def _param(name: str, where: str = "query", schema: dict[str, Any] | None = None, required: bool = False,
           description: str = "") -> dict[str, Any]:
    return {"name": name, "in": where, "required": required or where == "path",
            "schema": schema or {"type": "string"}, "description": description}


def _top(default: int, maximum: int) -> dict[str, Any]:
    return _param("top", schema={"type": "integer", "default": default, "minimum": 1, "maximum": maximum})


_TASK_NAME = _param("name", "path", description="Task name")
# Versions of a task (functions/http.py): strong entity tags, compared strongly by If-Match.
_ETAG = {"ETag": {"description": "the task's version: a strong entity tag (changes on every write)",
                  "schema": {"type": "string"}}}
_IF_MATCH = _param("If-Match", "header", description="only if the task is still at one of these versions "
                   "(ETags, comma-separated) or, with `*`, exists; else 412 and nothing changes")
_IF_NONE_MATCH = _param("If-None-Match", "header",
                        description="304 without a body if the task is at one of these versions")
_RUN_ID = _param("run_id", "path", description="Run id, e.g. da12")
_WAVE_ID = _param("wave_id", "path", description="Wave id, e.g. w12")
_TIMER_NAME = _param("timer", "path", description="Timer name")
_CONTINUATION = _param("continuation", description="the continuation of the previous page")


def _with_etag(responses: dict[str, Any], *statuses: str) -> dict[str, Any]:
    """`responses` with the ETag header declared on `statuses`."""
    return {s: {**r, "headers": _ETAG} if s in statuses else r for s, r in responses.items()}


_PAYLOAD = _json_body(b.AnyObject)
_DECISIONS = _ok(b.WebhookDecisions)
_CREDENTIALS = _ok(b.CredentialList)
_TASK_ANSWER = _ok(b.Task)

_DURATION = "a number and a unit, s, m, h, d or w (90s, 30m, 12h, 7d, 1d12h)"

PATHS: dict[str, Any] = {
    "/hooks/distribution": {"post": {
        "operationId": "distributionWebhook",
        "summary": "Ingress for a CNCF distribution registry's notifications (`notifications.endpoints`)",
        "requestBody": _json_body(b.DistributionNotification),
        "responses": {**_DECISIONS, **_errors("400", "413")}}},
    "/openapi.json": {"get": {"operationId": "openapi", "summary": "This document",
                              "responses": _ok(b.AnyObject)}},
    "/tasks": {
        "get": {"operationId": "listTasks", "summary": "List tasks",
                "responses": {**_ok(b.TaskList), **_errors()}},
        "post": {"operationId": "createTask", "summary": "Create a task (dependencies are computed now)",
                 "requestBody": _json_body(b.TaskCreate),
                 "responses": _with_etag({**_ok(b.Task, "201", "Created"),
                                          **_errors("400", "409", "413")}, "201")},
    },
    "/tasks/{name}": {
        "parameters": [_TASK_NAME],
        "get": {"operationId": "showTask", "summary": "Show a task", "parameters": [_IF_NONE_MATCH],
                "responses": _with_etag({**_ok(b.Task),
                                         "304": {"description": "Not modified: the version If-None-Match "
                                                 "names"},
                                         **_errors("400", "404")}, "200", "304")},
        "patch": {"operationId": "updateTask", "summary": "Change a task (only the fields sent)",
                  "parameters": [_IF_MATCH], "requestBody": _json_body(b.TaskUpdate),
                  "responses": _with_etag({**_ok(b.Task), **_errors("400", "404", "412", "413")},
                                          "200", "412")},
        "delete": {"operationId": "deleteTask", "summary": "Delete a task", "parameters": [_IF_MATCH],
                   "responses": _with_etag({"204": {"description": "Deleted"},
                                            **_errors("400", "404", "412")}, "412")},
    },
    "/tasks/{name}/runs": {
        "parameters": [_TASK_NAME],
        "post": {"operationId": "runTask", "summary": "Queue a manual run",
                 "requestBody": _json_body(b.RunRequest, required=False),
                 "responses": {**_ok(b.Run, "202", "Queued"), **_errors("400", "404", "409")}},
    },
    "/builds": {
        "post": {"operationId": "quickBuild", "summary": "Build an uploaded context (no task)",
                 "requestBody": _json_body(b.QuickBuild),
                 "responses": {**_ok(b.Run, "202", "Queued"), **_errors("400", "413")}},
    },
    "/runs": {
        "get": {"operationId": "listRuns", "summary": "List runs, newest first",
                "parameters": [
                    _top(15, 1000),
                    _param("task", description="only runs of this task"),
                    _param("status", schema={"type": "string", "enum": names(RunStatus)}),
                    _param("image", description="only runs that produced this image (short names mean the "
                           "default registry); with `task`, its first output image"),
                    _CONTINUATION],
                "responses": {**_ok(b.RunList), **_errors("400")}},
    },
    "/runs/{run_id}": {
        "parameters": [_RUN_ID],
        "get": {"operationId": "showRun", "summary": "Show a run",
                "responses": {**_ok(b.Run), **_errors("404")}},
    },
    "/runs/{run_id}/log": {
        "parameters": [_RUN_ID],
        "get": {"operationId": "runLog", "summary": "The run's log from a byte offset",
                "parameters": [_param("offset", schema={"type": "integer", "minimum": 0, "default": 0})],
                "responses": {"200": {"description": "Log text", "headers": {
                    "x-log-offset": {"schema": {"type": "integer"}},
                    "x-run-status": {"schema": {"type": "string"}}},
                    "content": {"text/plain": {"schema": {"type": "string"}}}}, **_errors("400", "404")}},
    },
    "/runs/{run_id}/cancel": {
        "parameters": [_RUN_ID],
        "post": {"operationId": "cancelRun", "summary": "Cancel a queued or running run",
                 "responses": {**_ok(b.Run), **_errors("404", "409")}},
    },
    "/decisions": {
        "get": {"operationId": "listDecisions",
                "summary": "Recent trigger decisions: why did or didn't it rebuild?",
                "parameters": [_top(20, 500),
                               _param("image", description="only decisions about this image reference")],
                "responses": {**_ok(b.DecisionList), **_errors("400")}},
    },
    # The questions of functions/insight_api.py.
    "/bases/{ref}/impact": {
        "parameters": [_param("ref", "path", description="an image reference as a FROM line names it, "
                              "percent-encoded (`/` is `%2F`); short names follow Docker's rules")],
        "get": {"operationId": "baseImpact",
                "summary": "Every task that would rebuild, transitively, if this base changed, by level",
                "responses": {**_ok(b.Impact), **_errors("400")}}},
    "/graph": {"get": {"operationId": "dependencyGraph",
                       "summary": "Every task, the images it is built FROM, and its level",
                       "responses": {**_ok(b.Graph), **_errors()}}},
    "/stale": {"get": {"operationId": "staleTasks",
                       "summary": "Tasks last built on a base digest that is no longer current, and why",
                       "responses": {**_ok(b.StaleReport), **_errors()}}},
    "/tasks/{name}/decisions": {
        "parameters": [_TASK_NAME],
        "get": {"operationId": "taskDecisions",
                "summary": "The recent decisions about this task's bases, newest first, with its own verdict",
                "parameters": [_top(20, 200)],
                "responses": {**_ok(b.TaskDecisions), **_errors("400", "404")}}},
    # functions/admin_api.py
    "/secrets/rotate": {
        "post": {"operationId": "rotateSecrets",
                 "summary": "Re-encrypt every task's stored secrets with the first configured key",
                 "responses": {**_ok(b.ResealReport), **_errors(),
                               "503": {"description": "No BASETRIGGER_SECRET_KEY, or not Fernet keys",
                                       "content": {"application/json": {"schema": _ref(b.Error)}}}}}},
    "/admin/migrate": {
        "post": {"operationId": "migrate",
                 "summary": "Move rows stored by an older schema into today's layout (idempotent)",
                 "responses": {**_ok(b.MigrationReport), **_errors()}}},
    # Bases anywhere: more webhooks, bases, registry credentials (functions/webhooks_*.py,
    # functions/registry_api.py).
    "/hooks/harbor": {"post": {
        "operationId": "harborWebhook", "security": [],
        "summary": "Harbor's webhook (Default or CloudEvents payload); the Authorization header must be "
                   "BASETRIGGER_HARBOR_AUTH",
        "requestBody": _PAYLOAD, "responses": {**_DECISIONS, **_errors("400", "403", "413")}}},
    "/hooks/dockerhub": {"post": {
        "operationId": "dockerhubWebhook",
        "summary": "Docker Hub's repository webhook (the key as ?code=); the digest is read from Docker Hub",
        "requestBody": _PAYLOAD, "responses": {**_DECISIONS, **_errors("400", "413")}}},
    "/hooks/github": {"post": {
        "operationId": "githubWebhook", "security": [],
        "summary": "GitHub Packages' registry_package / package events and a repository's push / "
                   "pull_request (source triggers), signed (X-Hub-Signature-256) with "
                   "BASETRIGGER_GITHUB_WEBHOOK_SECRET",
        "requestBody": _PAYLOAD, "responses": {**_DECISIONS, **_errors("400", "403", "413")}}},
    "/bases": {"get": {
        "operationId": "listBases", "summary": "Every base in use: how it is watched, what the poller saw",
        "responses": {**_ok(b.BaseList), **_errors()}}},
    "/bases/poll": {"post": {
        "operationId": "pollBases", "summary": "One poll cycle now (the timer runs one every interval)",
        "responses": {**_ok(b.AnyObject), **_errors()}}},
    "/tasks/{name}/credentials": {
        "parameters": [_TASK_NAME],
        "get": {"operationId": "listCredentials", "summary": "A task's registry credentials",
                "responses": {**_CREDENTIALS, **_errors("400", "404")}},
        "post": {"operationId": "addCredential", "summary": "Add a registry credential to a task",
                 "requestBody": _json_body(b.CredentialInput),
                 "responses": {**_CREDENTIALS, **_errors("400", "404", "409", "412", "413")}},
        "patch": {"operationId": "updateCredential", "summary": "Change a task's registry credential",
                  "requestBody": _json_body(b.CredentialInput),
                  "responses": {**_CREDENTIALS, **_errors("400", "404", "412", "413")}},
        "delete": {"operationId": "removeCredential", "summary": "Remove a task's registry credential",
                   "parameters": [_param("login_server", required=True)],
                   "responses": {**_CREDENTIALS, **_errors("400", "404", "412")}},
    },
    # Waves (functions/wave_api.py).
    "/waves": {"get": {
        "operationId": "listWaves", "summary": "Waves, newest first",
        "parameters": [_top(15, 200), _CONTINUATION],
        "responses": {**_ok(b.WaveList), **_errors("400")}}},
    "/waves/{wave_id}": {"parameters": [_WAVE_ID], "get": {
        "operationId": "showWave", "summary": "A wave, its counts and its members by level",
        "responses": {**_ok(b.WaveDetail), **_errors("400", "404")}}},
    "/waves/{wave_id}/cancel": {"parameters": [_WAVE_ID], "post": {
        "operationId": "cancelWave", "summary": "Cancel what of the wave has not run",
        "responses": {**_ok(b.WaveDetail), **_errors("400", "404", "409")}}},
    "/waves/{wave_id}/resume": {"parameters": [_WAVE_ID], "post": {
        "operationId": "resumeWave", "summary": "Let a wave its circuit breaker held go on",
        "responses": {**_ok(b.WaveDetail), **_errors("400", "404", "409")}}},
    "/bases/rebuild": {"post": {
        "operationId": "rebuildBase",
        "summary": "Start a wave of everything built FROM an image, whatever digests they built on",
        "requestBody": _json_body(b.RebuildRequest),
        "responses": {**_ok(b.Decision, "202", "Started"), **_errors("400", "413")}}},
    # Timer and source triggers (functions/trigger_api.py, functions/source_hooks.py).
    "/tasks/{name}/timers": {
        "parameters": [_TASK_NAME],
        "get": {"operationId": "listTimers", "summary": "A task's timers",
                "responses": {**_ok(b.TimerList), **_errors("400", "404")}},
        "post": {"operationId": "addTimer", "summary": "Add a timer to a task (name and schedule needed)",
                 "requestBody": _json_body(b.TimerInput),
                 "responses": {**_ok(b.Task, "201", "Added"), **_errors("400", "404", "412", "413")}}},
    "/hooks/gitlab": {"post": {
        "operationId": "gitlabWebhook", "security": [],
        "summary": "GitLab's Push Hook (source triggers); X-Gitlab-Token must be "
                   "BASETRIGGER_GITLAB_WEBHOOK_TOKEN",
        "requestBody": _PAYLOAD, "responses": {**_DECISIONS, **_errors("400", "403", "413")}}},
    "/hooks/azure-repos": {"post": {
        "operationId": "azureReposWebhook",
        "summary": "Azure Repos service hooks git.push, git.pullrequest.created|updated (source triggers)",
        "requestBody": _PAYLOAD, "responses": {**_DECISIONS, **_errors("400", "413")}}},
    "/tasks/{name}/timers/{timer}": {
        "parameters": [_TASK_NAME, _TIMER_NAME],
        "patch": {"operationId": "updateTimer", "summary": "Change a task's timer",
                  "requestBody": _json_body(b.TimerInput),
                  "responses": {**_TASK_ANSWER, **_errors("400", "404", "412", "413")}},
        "delete": {"operationId": "removeTimer", "summary": "Remove a task's timer",
                   "responses": {**_TASK_ANSWER, **_errors("400", "404", "412")}}},
    # Base changes (functions/registry_api.py).
    "/bases/changes": {"get": {
        "operationId": "baseChanges",
        "summary": "What changed between two digests of a base: config, layers, OS packages, OS release",
        "parameters": [
            _param("image", required=True, description="the base by its tag, e.g. node:20"),
            _param("from", description="the old digest (default: what the dependents last built on, else "
                   "the previous digest pushed)"),
            _param("to", description="the new digest (default: what the tag points at now)")],
        "responses": {**_ok(b.BaseChange), **_errors("400", "404", "422")}}},
    "/bases/settling": {
        "get": {"operationId": "listSettling",
                "summary": "Bases within their settle window (BASETRIGGER_SETTLE_SECONDS): the newest "
                           "digest, when it moved there, when its one wave starts if it stays still",
                "responses": {**_ok(b.SettlingList), **_errors()}},
        "post": {"operationId": "settleBases",
                 "summary": "Dispatch the bases that have been still for their window now (housekeeping "
                            "does it every minute)",
                 "responses": {**_ok(b.SettledList), **_errors()}}},
    # Quarantine (functions/quarantine_api.py).
    "/bases/quarantine": {
        "get": {"operationId": "listQuarantine", "summary": "Every quarantined base digest, newest first",
                "responses": _ok(b.QuarantineList)},
        "post": {"operationId": "quarantineBase",
                 "summary": "Block every wave and manual run that would build on a digest",
                 "requestBody": _json_body(b.QuarantineRequest),
                 "responses": {**_ok(b.Quarantined, "201", "Quarantined"), **_errors("400", "413")}}},
    "/bases/release": {"post": {
        "operationId": "releaseBase", "summary": "Lift the quarantine of a digest",
        "requestBody": _json_body(b.ReleaseRequest),
        "responses": {**_ok(b.Quarantine), **_errors("400", "404", "413")}}},
    "/bases/latency": {"get": {
        "operationId": "baseLatency",
        "summary": "Patch latency: base push to the last dependent pushed (p50, p95, worst; misses)",
        "parameters": [_param("since", description=f"how far back, at most 90d (default 7d): {_DURATION}"),
                       _param("slo", description=f"the objective (default 12h): {_DURATION}")],
        "responses": {**_ok(b.LatencyReport), **_errors("400")}}},
}


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "basetrigger", "version": "1",
                 "description": "Base-image update triggers for container images."},
        "servers": [{"url": "/api"}],
        "security": [{"functionKey": []}],
        "paths": PATHS,
        "components": {
            "schemas": component_schemas(),
            "securitySchemes": {"functionKey": {"type": "apiKey", "in": "header", "name": "x-functions-key"}},
        },
    }
