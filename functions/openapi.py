"""The OpenAPI 3 document of the HTTP API (served at /api/openapi.json, checked against the routes)."""

from __future__ import annotations

from typing import Any

from shared.domain.vocabulary import (
    BuilderKind,
    EventSource,
    Outcome,
    RunStatus,
    Trigger,
    TriggerType,
    UpdatePolicy,
    Watch,
    WaveState,
    names,
)

_UPDATE_POLICY = {"type": "string", "enum": names(UpdatePolicy), "default": UpdatePolicy.REBUILD.value,
                  "description": "what a base update does: rebuild; rebase (swap the base's layers); "
                  "auto (rebase only where that provably equals a rebuild, see docs/api.md)"}
_REBASE_CHECK = {"type": "string", "nullable": True,
                 "description": "a command run in a rebased image before it is tagged (words split as "
                 "a shell would, run without one), e.g. `node --version`; if it fails, the run rebuilds"}
_ERROR = {"$ref": "#/components/schemas/Error"}


def _ok(schema: dict[str, Any], status: str = "200", description: str = "OK") -> dict[str, Any]:
    return {status: {"description": description, "content": {"application/json": {"schema": schema}}}}


def _errors(*statuses: str) -> dict[str, Any]:
    names = {"400": "Invalid input", "401": "Missing or wrong function key",
             "403": "The route is not configured (its secret setting is empty)", "404": "Not found",
             "409": "Conflict",
             "412": "The task is at another version than If-Match names (or kept changing): nothing changed",
             "413": "Body too large",
             "422": "The image's registry could not be read (unreachable, refused, too slow)"}
    return {s: {"description": names[s], "content": {"application/json": {"schema": _ERROR}}}
            for s in ("401", *statuses)}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _param(name: str, where: str = "query", schema: dict | None = None, required: bool = False,
           description: str = "") -> dict[str, Any]:
    return {"name": name, "in": where, "required": required or where == "path",
            "schema": schema or {"type": "string"}, "description": description}


_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_TASK_NAME = _param("name", "path", description="Task name")
# Versions of a task (functions/http.py): strong entity tags, compared strongly by If-Match.
_ETAG = {"ETag": {"description": "the task's version: a strong entity tag (changes on every write)",
                  "schema": {"type": "string"}}}
_IF_MATCH = _param("If-Match", "header", description="only if the task is still at one of these versions "
                   "(ETags, comma-separated) or, with `*`, exists; else 412 and nothing changes")
_IF_NONE_MATCH = _param("If-None-Match", "header",
                        description="304 without a body if the task is at one of these versions")


def _with_etag(responses: dict[str, Any], *statuses: str) -> dict[str, Any]:
    """`responses` with the ETag header declared on `statuses`."""
    return {s: {**r, "headers": _ETAG} if s in statuses else r for s, r in responses.items()}

_RUN_ID = _param("run_id", "path", description="Run id, e.g. da12")

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "message"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
    "TaskCreate": {"type": "object", "required": ["name", "images", "context"], "properties": {
        "name": {"type": "string"}, "images": {"type": "array", "items": {"type": "string"}},
        "context": {"type": "string", "description": "a directory (its absolute path), or a git URL"},
        "context_archive": {"type": "string", "format": "byte", "writeOnly": True,
                            "description": "base64 of a .tar.gz of the context directory: built from "
                            "where the builder cannot read the directory (the cloud)"},
        "dockerfile": {"type": "string", "default": "Dockerfile"}, "branch": {"type": "string"},
        "build_args": _STR_MAP, "secret_args": _STR_MAP,
        "git_access_token": {"type": "string", "writeOnly": True},
        "base_image_trigger_enabled": {"type": "boolean", "default": True},
        "base_image_trigger_type": {"type": "string", "enum": names(TriggerType),
                                    "default": TriggerType.RUNTIME.value},
        "platform": {"type": "string", "default": "linux"},
        "update_trigger_endpoint": {"type": "string", "nullable": True,
                                    "description": "http(s) URL that receives a JSON POST when a run "
                                    "of the task starts and ends (docs/api.md); null removes it"},
        "update_trigger_secret": {"type": "string", "nullable": True, "writeOnly": True,
                                  "description": "signs those POSTs (X-Basetrigger-Signature-256)"},
        "update_policy": _UPDATE_POLICY, "rebase_check": _REBASE_CHECK}},
    "Task": {"type": "object", "properties": {
        "name": {"type": "string"}, "images": {"type": "array", "items": {"type": "string"}},
        "context": {"type": "string"}, "branch": {"type": "string", "nullable": True},
        "context_upload": {"type": "string", "nullable": True,
                           "description": "the stored archive a directory context is built from"},
        "dockerfile": {"type": "string"}, "build_args": _STR_MAP,
        "secret_args": {"type": "array", "items": {"type": "string"}, "description": "names only"},
        "git_access_token": {"type": "boolean"},
        "base_image_trigger": {"type": "object", "properties": {
            "enabled": {"type": "boolean"}, "type": {"type": "string", "enum": names(TriggerType)}}},
        "platform": {"type": "string"},
        "update_trigger": {"type": "object", "properties": {
            "endpoint": {"type": "string", "nullable": True}, "secret": {"type": "boolean"}}},
        "update_policy": _UPDATE_POLICY, "rebase_check": _REBASE_CHECK,
        "dependencies": {"type": "array", "items": {"type": "object", "properties": {
            "image": {"type": "string"}, "digest": {"type": "string", "nullable": True},
            "runtime": {"type": "boolean"}}}},
        "warnings": {"type": "array", "items": {"type": "string"},
                     "description": "about the Dockerfile as last read, e.g. a secret arg read through ARG"},
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
        "etag": {"type": "string", "nullable": True,
                 "description": "the task's version, as the ETag header gives it (for If-Match)"}}},
    "Run": {"type": "object", "properties": {
        "run_id": {"type": "string"},
        "status": {"type": "string", "enum": names(RunStatus)},
        "trigger": {"type": "string", "enum": names(Trigger)},
        "task": {"type": "string", "nullable": True}, "platform": {"type": "string"},
        "cause": {"type": "string", "nullable": True}, "event_id": {"type": "string", "nullable": True},
        **{k: {"type": "string", "format": "date-time", "nullable": True}
           for k in ("created_at", "started_at", "finished_at", "heartbeat_at")},
        "duration_seconds": {"type": "number", "nullable": True},
        "output_images": {"type": "array", "items": {"type": "string"}},
        "output_digest": {"type": "string", "nullable": True}, "base_digests": _STR_MAP,
        "reason": {"type": "string", "nullable": True}, "attempt": {"type": "integer"},
        "builder": {"type": "string", "nullable": True, "enum": [*names(BuilderKind), None],
                    "description": "what made the image: buildah, acr, or rebase (no build)"},
        "update_decision": {"type": "string", "nullable": True,
                            "description": "for a base update: what the task's update policy decided "
                            "and why, e.g. `rebased: ...` or `rebuilt: RUN in final stage`"},
        "base_layers": {"type": "object", "additionalProperties": {"type": "array",
                        "items": {"type": "string"}},
                        "description": "each base's layer digests, as the image was built on them"},
        "final_base": {"type": "string", "nullable": True,
                       "description": "the image the built Dockerfile's final stage is FROM"},
        "final_stage": {"type": "string", "nullable": True,
                        "description": "what the auto rule found in that Dockerfile: `adds only files and "
                        "metadata`, or why not (e.g. `RUN in final stage`)"},
        "force": {"type": "boolean"},
        "wave_id": {"type": "string", "nullable": True, "description": "the wave the run belongs to"},
        "released": {"type": "boolean",
                     "description": "false while a wave's run waits for its bases or for room"}}},
    "Decision": {"type": "object", "properties": {
        "event_id": {"type": "string"}, "source": {"type": "string", "enum": names(EventSource)},
        "outcome": {"type": "string", "enum": names(Outcome)},
        "reason": {"type": "string"}, "image": {"type": "string", "nullable": True},
        "digest": {"type": "string", "nullable": True},
        "runs": {"type": "array", "items": {"type": "string"}},
        "tasks": {"type": "array", "items": {"type": "object", "properties": {
            "task": {"type": "string"}, "outcome": {"type": "string", "enum": names(Outcome)},
            "reason": {"type": "string"},
            "run_id": {"type": "string", "nullable": True}}}},
        "time": {"type": "string", "format": "date-time"},
        "change": {"type": "string", "nullable": True,
                   "description": "what the pushed digest changed in the base (see BaseChange), noted "
                   "by the first worker of the wave it started; null until then"}}},
}


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


PATHS: dict[str, Any] = {
    "/hooks/distribution": {"post": {
        "operationId": "distributionWebhook",
        "summary": "Ingress for a CNCF distribution registry's notifications (`notifications.endpoints`)",
        "requestBody": _json_body({"type": "object", "required": ["events"], "properties": {
            "events": {"type": "array", "items": {"type": "object"}}}}),
        "responses": {**_ok({"type": "object", "properties": {"decisions": {"type": "array", "items": {
            "type": "object"}}}}), **_errors("400", "413")}}},
    "/openapi.json": {"get": {"operationId": "openapi", "summary": "This document",
                              "responses": _ok({"type": "object"})}},
    "/tasks": {
        "get": {"operationId": "listTasks", "summary": "List tasks",
                "responses": {**_ok({"type": "object", "properties": {
                    "tasks": {"type": "array", "items": _ref("Task")}}}), **_errors()}},
        "post": {"operationId": "createTask", "summary": "Create a task (dependencies are computed now)",
                 "requestBody": _json_body(_ref("TaskCreate")),
                 "responses": _with_etag({**_ok(_ref("Task"), "201", "Created"),
                                          **_errors("400", "409", "413")}, "201")},
    },
    "/tasks/{name}": {
        "parameters": [_TASK_NAME],
        "get": {"operationId": "showTask", "summary": "Show a task", "parameters": [_IF_NONE_MATCH],
                "responses": _with_etag({**_ok(_ref("Task")),
                                         "304": {"description": "Not modified: the version If-None-Match "
                                                 "names"},
                                         **_errors("400", "404")}, "200", "304")},
        "patch": {"operationId": "updateTask", "summary": "Change a task", "parameters": [_IF_MATCH],
                  "requestBody": _json_body(_ref("TaskCreate")),
                  "responses": _with_etag({**_ok(_ref("Task")), **_errors("400", "404", "412", "413")},
                                          "200", "412")},
        "delete": {"operationId": "deleteTask", "summary": "Delete a task", "parameters": [_IF_MATCH],
                   "responses": _with_etag({"204": {"description": "Deleted"},
                                            **_errors("400", "404", "412")}, "412")},
    },
    "/tasks/{name}/runs": {
        "parameters": [_TASK_NAME],
        "post": {"operationId": "runTask", "summary": "Queue a manual run",
                 "requestBody": {"required": False, "content": {"application/json": {"schema": {
                     "type": "object", "properties": {"force": {"type": "boolean", "default": False}}}}}},
                 "responses": {**_ok(_ref("Run"), "202", "Queued"), **_errors("400", "404", "409")}},
    },
    "/builds": {
        "post": {"operationId": "quickBuild", "summary": "Build an uploaded context (no task)",
                 "requestBody": _json_body({"type": "object", "required": ["images", "context"],
                                            "properties": {
                     "images": {"type": "array", "items": {"type": "string"}},
                     "dockerfile": {"type": "string", "default": "Dockerfile"},
                     "build_args": _STR_MAP, "platform": {"type": "string", "default": "linux"},
                     "context": {"type": "string", "format": "byte",
                                 "description": "base64 of a .tar.gz of the context"}}}),
                 "responses": {**_ok(_ref("Run"), "202", "Queued"), **_errors("400", "413")}},
    },
    "/runs": {
        "get": {"operationId": "listRuns", "summary": "List runs, newest first",
                "parameters": [
                    _param("top", schema={"type": "integer", "default": 15, "minimum": 1, "maximum": 1000}),
                    _param("task", description="only runs of this task"),
                    _param("status", schema={"type": "string", "enum": names(RunStatus)}),
                    _param("image", description="only runs that produced this image (short names mean the "
                           "default registry); with `task`, its first output image"),
                    _param("continuation", description="the continuation of the previous page")],
                "responses": {**_ok({"type": "object", "properties": {
                    "runs": {"type": "array", "items": _ref("Run")},
                    "continuation": {"type": "string", "nullable": True}}}), **_errors("400")}},
    },
    "/runs/{run_id}": {
        "parameters": [_RUN_ID],
        "get": {"operationId": "showRun", "summary": "Show a run",
                "responses": {**_ok(_ref("Run")), **_errors("404")}},
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
                 "responses": {**_ok(_ref("Run")), **_errors("404", "409")}},
    },
    "/decisions": {
        "get": {"operationId": "listDecisions",
                "summary": "Recent trigger decisions: why did or didn't it rebuild?",
                "parameters": [_param("top", schema={"type": "integer", "default": 20,
                                                     "minimum": 1, "maximum": 500}),
                               _param("image", description="only decisions about this image reference")],
                "responses": {**_ok({"type": "object", "properties": {
                    "decisions": {"type": "array", "items": _ref("Decision")}}}), **_errors("400")}},
    },
}


# ---- the questions of functions/insight_api.py ----------------------------------------------
_TRIGGER = {"type": "object", "properties": {"enabled": {"type": "boolean"},
                                             "type": {"type": "string", "enum": names(TriggerType)}}}
SCHEMAS.update({
    "ImpactTask": {"type": "object", "properties": {
        "task": {"type": "string"}, "level": {"type": "integer", "description": "the wave it rebuilds in"},
        "rebuilds": {"type": "boolean", "description": "false: trigger off, or a build-stage base under a "
                     "Runtime trigger (listed, not followed)"},
        "reason": {"type": "string"}, "trigger": _TRIGGER,
        "outputs": {"type": "array", "items": {"type": "string"},
                    "description": "output images other tasks can be built FROM (followed)"},
        "per_run_outputs": {"type": "array", "items": {"type": "string"},
                            "description": "templates with {{.Run.ID}}: a new tag each run (not followed)"},
        "cycle": {"type": "boolean"}}},
    "Edge": {"type": "object", "properties": {
        "base": {"type": "string"}, "task": {"type": "string"},
        "runtime": {"type": "boolean", "description": "false: a build-stage base"},
        "triggers": {"type": "boolean"}}},
    "Impact": {"type": "object", "properties": {
        "image": {"type": "string"}, "rebuilds": {"type": "integer"}, "tasks": {"type": "integer"},
        "levels": {"type": "array", "items": {"type": "object", "properties": {
            "level": {"type": "integer"}, "tasks": {"type": "array", "items": _ref("ImpactTask")}}}},
        "edges": {"type": "array", "items": _ref("Edge")}}},
    "Graph": {"type": "object", "properties": {
        "tasks": {"type": "array", "items": _ref("ImpactTask")},
        "images": {"type": "array", "items": {"type": "object", "properties": {
            "image": {"type": "string"}, "produced_by": {"type": "string", "nullable": True}}}},
        "edges": {"type": "array", "items": _ref("Edge")}}},
    "StaleEntry": {"type": "object", "properties": {
        "task": {"type": "string"}, "base": {"type": "string"}, "runtime": {"type": "boolean"},
        "state": {"type": "string", "enum": ["stale", "unknown"]},
        "built_digest": {"type": "string"}, "current_digest": {"type": "string", "nullable": True},
        "source": {"type": "string", "enum": ["registry", "events"], "nullable": True},
        "since": {"type": "string", "format": "date-time", "nullable": True},
        "cause": {"type": "string", "description": "trigger-disabled, not-a-runtime-dependency, "
                  "rebuild-pending, run-failed, no-event, base-unreachable or a decision outcome"},
        "reason": {"type": "string"}, "event_id": {"type": "string", "nullable": True},
        "run_id": {"type": "string", "nullable": True}}},
    "TaskVerdict": {"type": "object", "properties": {
        "time": {"type": "string", "format": "date-time"}, "event_id": {"type": "string"},
        "image": {"type": "string", "nullable": True}, "digest": {"type": "string", "nullable": True},
        "outcome": {"type": "string", "enum": names(Outcome)}, "reason": {"type": "string"},
        "run_id": {"type": "string", "nullable": True},
        "run_status": {"type": "string", "enum": names(RunStatus), "nullable": True},
        "run_reason": {"type": "string", "nullable": True},
        "change": {"type": "string", "nullable": True,
                   "description": "what the pushed digest changed in the base (Decision.change)"},
        "update_decision": {"type": "string", "nullable": True,
                            "description": "what the task's update policy made of the run: "
                            "`rebased: …` or `rebuilt: …`"}}},
})
PATHS.update({
    "/bases/{ref}/impact": {
        "parameters": [_param("ref", "path", description="an image reference as a FROM line names it, "
                              "percent-encoded (`/` is `%2F`); short names follow Docker's rules")],
        "get": {"operationId": "baseImpact",
                "summary": "Every task that would rebuild, transitively, if this base changed, by level",
                "responses": {**_ok(_ref("Impact")), **_errors("400")}}},
    "/graph": {"get": {"operationId": "dependencyGraph",
                       "summary": "Every task, the images it is built FROM, and its level",
                       "responses": {**_ok(_ref("Graph")), **_errors()}}},
    "/stale": {"get": {"operationId": "staleTasks",
                       "summary": "Tasks last built on a base digest that is no longer current, and why",
                       "responses": {**_ok({"type": "object", "properties": {
                           "stale": {"type": "array", "items": _ref("StaleEntry")},
                           "checked": {"type": "object", "properties": {
                               "tasks": {"type": "integer"}, "bases": {"type": "integer"},
                               "dependencies": {"type": "integer"}}}}}), **_errors()}}},
    "/tasks/{name}/decisions": {
        "parameters": [_TASK_NAME],
        "get": {"operationId": "taskDecisions",
                "summary": "The recent decisions about this task's bases, newest first, with its own verdict",
                "parameters": [_param("top", schema={"type": "integer", "default": 20,
                                                     "minimum": 1, "maximum": 200})],
                "responses": {**_ok({"type": "object", "properties": {
                    "task": {"type": "string"},
                    "decisions": {"type": "array", "items": _ref("TaskVerdict")}}}),
                    **_errors("400", "404")}}},
})


# functions/admin_api.py
SCHEMAS["ResealReport"] = {
    "type": "object",
    "description": "What re-encrypting the stored secrets with the first BASETRIGGER_SECRET_KEY key did.",
    "properties": {
        "resealed": {"type": "array", "items": {"type": "string"},
                     "description": "tasks whose secrets were re-encrypted with the first key"},
        "current": {"type": "array", "items": {"type": "string"},
                    "description": "tasks whose secrets already were"},
        "unreadable": {"type": "array", "items": {"type": "string"},
                       "description": "tasks whose secrets no configured key opens (left as they were)"},
        "busy": {"type": "array", "items": {"type": "string"},
                 "description": "tasks that changed on every attempt: rotate again"},
        "complete": {"type": "boolean",
                     "description": "every stored secret is sealed with the first key: the others can go"},
        "primary_key": {"type": "string", "nullable": True,
                        "description": "fingerprint of the encrypting key (a SHA-256 prefix, not the key)"},
        "keys": {"type": "integer", "description": "how many keys are configured"},
    },
}
PATHS["/secrets/rotate"] = {
    "post": {"operationId": "rotateSecrets",
             "summary": "Re-encrypt every task's stored secrets with the first configured key",
             "responses": {**_ok(_ref("ResealReport")), **_errors(),
                           "503": {"description": "No BASETRIGGER_SECRET_KEY, or not Fernet keys",
                                   "content": {"application/json": {"schema": _ERROR}}}}},
}

SCHEMAS["MigrationReport"] = {
    "type": "object",
    "properties": {"runs": {"type": "object", "properties": {
        "runs": {"type": "integer", "description": "runs moved from the schema-2 partition"},
        "rows_removed": {"type": "integer", "description": "old rows removed with them"}}},
        "decisions": {"type": "object", "properties": {
            "decisions": {"type": "integer", "description": "decisions moved from the schema-1 partition"},
            "markers": {"type": "integer", "description": "event markers moved with them"},
            "holds": {"type": "integer", "description": "stale push holds removed"}}},
        "waves": {"type": "object", "properties": {
            "waves": {"type": "integer", "description": "waves whose members were in one partition"},
            "members": {"type": "integer", "description": "members moved into the wave's buckets"},
            "ready_rows": {"type": "integer", "description": "ready rows moved with them"}}}},
}
PATHS["/admin/migrate"] = {
    "post": {"operationId": "migrate",
             "summary": "Move rows stored by an older schema into today's layout (idempotent)",
             "responses": {**_ok(_ref("MigrationReport")), **_errors()}},
}


# ---- bases anywhere: more webhooks, bases, registry credentials (functions/webhooks_*.py,
# functions/registry_api.py) --------------------------------------------------------------------
_DECISIONS = _ok({"type": "object", "properties": {"decisions": {"type": "array", "items": {
    "type": "object"}}}})
_PAYLOAD = _json_body({"type": "object"})
SCHEMAS["Credential"] = {"type": "object", "properties": {
    "login_server": {"type": "string"}, "username": {"type": "string", "nullable": True},
    "password": {"type": "boolean", "description": "whether one is stored; never the password"},
    "use_identity": {"type": "boolean"}}}
SCHEMAS["CredentialInput"] = {"type": "object", "required": ["login_server"], "properties": {
    "login_server": {"type": "string"}, "username": {"type": "string"},
    "password": {"type": "string", "writeOnly": True}, "use_identity": {"type": "boolean"}}}
SCHEMAS["Base"] = {"type": "object", "properties": {
    "base": {"type": "string"}, "watch": {"type": "string", "enum": names(Watch)},
    "polled": {"type": "boolean"}, "digest": {"type": "string", "nullable": True},
    "platforms": _STR_MAP,
    **{k: {"type": "string", "format": "date-time", "nullable": True}
       for k in ("last_checked", "last_changed", "last_error_at")},
    "last_error": {"type": "string", "nullable": True},
    "tasks": {"type": "array", "items": {"type": "string"}}}}
_CREDENTIALS = _ok({"type": "object", "properties": {"task": {"type": "string"}, "credentials": {
    "type": "array", "items": _ref("Credential")}}})
PATHS.update({
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
        "responses": {**_ok({"type": "object", "properties": {
            "interval_seconds": {"type": "integer"},
            "bases": {"type": "array", "items": _ref("Base")}}}), **_errors()}}},
    "/bases/poll": {"post": {
        "operationId": "pollBases", "summary": "One poll cycle now (the timer runs one every interval)",
        "responses": {**_ok({"type": "object"}), **_errors()}}},
    "/tasks/{name}/credentials": {
        "parameters": [_TASK_NAME],
        "get": {"operationId": "listCredentials", "summary": "A task's registry credentials",
                "responses": {**_CREDENTIALS, **_errors("400", "404")}},
        "post": {"operationId": "addCredential", "summary": "Add a registry credential to a task",
                 "requestBody": _json_body(_ref("CredentialInput")),
                 "responses": {**_CREDENTIALS, **_errors("400", "404", "409", "412", "413")}},
        "patch": {"operationId": "updateCredential", "summary": "Change a task's registry credential",
                  "requestBody": _json_body(_ref("CredentialInput")),
                  "responses": {**_CREDENTIALS, **_errors("400", "404", "412", "413")}},
        "delete": {"operationId": "removeCredential", "summary": "Remove a task's registry credential",
                   "parameters": [_param("login_server", required=True)],
                   "responses": {**_CREDENTIALS, **_errors("400", "404", "412")}},
    },
})


# ---- waves ---------------------------------------------------------------------------------------
_WAVE_ID = _param("wave_id", "path", description="Wave id, e.g. w12")
SCHEMAS["Wave"] = {"type": "object", "properties": {
    "wave_id": {"type": "string"}, "root": {"type": "string", "description": "what started it"},
    "event_id": {"type": "string", "nullable": True},
    "state": {"type": "string", "enum": names(WaveState)}, "levels": {"type": "integer"},
    "counts": {"type": "object", "additionalProperties": {"type": "integer"},
               "description": "members by run status; Waiting: not released yet"},
    "reason": {"type": "string", "nullable": True},
    "breaker_base": {"type": "array", "items": {"type": "integer"}},
    "created_at": {"type": "string", "format": "date-time"},
    "base_change": {"type": "string", "nullable": True,
                    "description": "what the base push changed, one line starting with its classification; "
                    "null until the wave's first worker noted it, and for a manual run's wave"}}}
SCHEMAS["WaveDetail"] = {"allOf": [_ref("Wave"), {"type": "object", "properties": {
    "members": {"type": "array", "items": {"type": "object", "properties": {
        "task": {"type": "string"}, "run_id": {"type": "string"}, "level": {"type": "integer"},
        "waits_for": {"type": "array", "items": {"type": "string"}}, "released": {"type": "boolean"},
        "outcome": {"type": "string", "nullable": True, "enum": [*names(RunStatus), None]}}}}}}]}
PATHS.update({
    "/waves": {"get": {
        "operationId": "listWaves", "summary": "Waves, newest first",
        "parameters": [_param("top", schema={"type": "integer", "default": 15, "minimum": 1, "maximum": 200}),
                       _param("continuation", description="the continuation of the previous page")],
        "responses": {**_ok({"type": "object", "properties": {
            "waves": {"type": "array", "items": _ref("Wave")},
            "continuation": {"type": "string", "nullable": True}}}), **_errors("400")}}},
    "/waves/{wave_id}": {"parameters": [_WAVE_ID], "get": {
        "operationId": "showWave", "summary": "A wave, its counts and its members by level",
        "responses": {**_ok(_ref("WaveDetail")), **_errors("400", "404")}}},
    "/waves/{wave_id}/cancel": {"parameters": [_WAVE_ID], "post": {
        "operationId": "cancelWave", "summary": "Cancel what of the wave has not run",
        "responses": {**_ok(_ref("WaveDetail")), **_errors("400", "404", "409")}}},
    "/waves/{wave_id}/resume": {"parameters": [_WAVE_ID], "post": {
        "operationId": "resumeWave", "summary": "Let a wave its circuit breaker held go on",
        "responses": {**_ok(_ref("WaveDetail")), **_errors("400", "404", "409")}}},
    "/bases/rebuild": {"post": {
        "operationId": "rebuildBase",
        "summary": "Start a wave of everything built FROM an image, whatever digests they built on",
        "requestBody": _json_body({"type": "object", "required": ["image"], "properties": {
            "image": {"type": "string"}, "digest": {"type": "string", "nullable": True}}}),
        "responses": {**_ok(_ref("Decision"), "202", "Started"), **_errors("400", "413")}}},
})


# ---- timer and source triggers, notifications (functions/trigger_api.py, functions/source_hooks.py) --
SCHEMAS["Timer"] = {"type": "object", "properties": {
    "name": {"type": "string"}, "schedule": {"type": "string", "description": "cron, UTC"},
    "enabled": {"type": "boolean"},
    "since": {"type": "string", "format": "date-time", "description": "slots before it never run"}}}
SCHEMAS["TimerInput"] = {"type": "object", "properties": {
    "name": {"type": "string"}, "schedule": {"type": "string"}, "enabled": {"type": "boolean"}}}
SCHEMAS["TaskCreate"]["properties"].update({
    "schedule": {"type": "string", "description": "cron in UTC: the task's timer t1 (`--schedule`)"},
    "commit_trigger_enabled": {"type": "boolean", "default": False},
    "pull_request_trigger_enabled": {"type": "boolean", "default": False}})
SCHEMAS["Task"]["properties"].update({
    "timers": {"type": "array", "items": _ref("Timer")},
    "source_triggers": {"type": "object", "properties": {
        "commit": {"type": "boolean"}, "pull_request": {"type": "boolean"}}}})
SCHEMAS["Run"]["properties"].update({
    "commit": {"type": "string", "nullable": True, "description": "the commit a source trigger built"},
    "branch": {"type": "string", "nullable": True}})
_TIMER_NAME = _param("timer", "path", description="Timer name")
_TASK_ANSWER = _ok(_ref("Task"))
PATHS.update({
    "/tasks/{name}/timers": {
        "parameters": [_TASK_NAME],
        "get": {"operationId": "listTimers", "summary": "A task's timers",
                "responses": {**_ok({"type": "object", "properties": {
                    "timers": {"type": "array", "items": _ref("Timer")}}}), **_errors("400", "404")}},
        "post": {"operationId": "addTimer", "summary": "Add a timer to a task",
                 "requestBody": _json_body(_ref("TimerInput")),
                 "responses": {**_ok(_ref("Task"), "201", "Added"), **_errors("400", "404", "412", "413")}}},
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
                  "requestBody": _json_body(_ref("TimerInput")),
                  "responses": {**_TASK_ANSWER, **_errors("400", "404", "412", "413")}},
        "delete": {"operationId": "removeTimer", "summary": "Remove a task's timer",
                   "responses": {**_TASK_ANSWER, **_errors("400", "404", "412")}}},
})


# ---- base changes (functions/registry_api.py) -------------------------------------------------
_CLASSIFICATION = {"type": "string", "enum": ["identical content", "metadata only", "packages",
                                              "os release changed"]}
_DIGESTS = {"type": "array", "items": {"type": "string"}}
_FROM_TO = {"type": "object", "properties": {"from": {"nullable": True}, "to": {"nullable": True}}}
SCHEMAS["PlatformChange"] = {"type": "object", "properties": {
    "platform": {"type": "string"}, "classification": _CLASSIFICATION,
    "from": {"type": "string", "nullable": True}, "to": {"type": "string", "nullable": True},
    "config": {"type": "object", "additionalProperties": _FROM_TO,
               "description": "changed config fields (Env, Entrypoint, Cmd, User, WorkingDir, Labels, "
               "ExposedPorts, platform)"},
    "layers": {"type": "object", "properties": {k: _DIGESTS for k in (
        "added", "removed", "kept", "recompressed", "empty")}},
    "packages": {"type": "object", "properties": {
        "added": _STR_MAP, "removed": _STR_MAP,
        "upgraded": {"type": "array", "items": {"type": "object", "properties": {
            "package": {"type": "string"}, "from": {"type": "string"}, "to": {"type": "string"}}}}}},
    "os_release": {"type": "object", "properties": {"from": {"type": "string", "nullable": True},
                                                    "to": {"type": "string", "nullable": True}}},
    "notes": {"type": "array", "items": {"type": "string"}}}}
SCHEMAS["BaseChange"] = {"type": "object", "properties": {
    "image": {"type": "string"}, "from": {"type": "string"}, "to": {"type": "string"},
    "classification": _CLASSIFICATION, "summary": {"type": "string"},
    "platforms": {"type": "array", "items": _ref("PlatformChange")}}}
PATHS["/bases/changes"] = {"get": {
    "operationId": "baseChanges",
    "summary": "What changed between two digests of a base: config, layers, OS packages, OS release",
    "parameters": [
        _param("image", required=True, description="the base by its tag, e.g. node:20"),
        _param("from", description="the old digest (default: what the dependents last built on, else "
               "the previous digest pushed)"),
        _param("to", description="the new digest (default: what the tag points at now)")],
    "responses": {**_ok(_ref("BaseChange")), **_errors("400", "404", "422")}}}


# ---- quarantine (functions/quarantine_api.py) -------------------------------------------------
SCHEMAS["Quarantine"] = {"type": "object", "properties": {
    "digest": {"type": "string"}, "image": {"type": "string"}, "reason": {"type": "string"},
    "by": {"type": "string", "description": "manual, or the circuit breaker of a wave"},
    "since": {"type": "string", "format": "date-time"}}}
_TARGET = {"type": "string", "description": "IMAGE@DIGEST, e.g. node:20@sha256:…"}
PATHS["/bases/quarantine"] = {
    "get": {"operationId": "listQuarantine", "summary": "Every quarantined base digest, newest first",
            "responses": {**_ok({"type": "object", "properties": {
                "quarantine": {"type": "array", "items": _ref("Quarantine")}}})}},
    "post": {"operationId": "quarantineBase",
             "summary": "Block every wave and manual run that would build on a digest",
             "requestBody": _json_body({"type": "object", "required": ["image", "reason"], "properties": {
                 "image": _TARGET, "reason": {"type": "string"}}}),
             "responses": {**_ok(_ref("Quarantine"), "201", "Quarantined"), **_errors("400", "413")}}}
PATHS["/bases/release"] = {"post": {
    "operationId": "releaseBase", "summary": "Lift the quarantine of a digest",
    "requestBody": _json_body({"type": "object", "required": ["image"], "properties": {"image": _TARGET}}),
    "responses": {**_ok(_ref("Quarantine")), **_errors("400", "404", "413")}}}


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {"title": "basetrigger", "version": "1",
                 "description": "Base-image update triggers for container images."},
        "servers": [{"url": "/api"}],
        "security": [{"functionKey": []}],
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"functionKey": {"type": "apiKey", "in": "header", "name": "x-functions-key"}},
        },
    }
