"""Every JSON body of the HTTP API, declared once: requests are validated with these models
(functions/http.py `read_body`) and the OpenAPI document's schemas are generated from them
(functions/openapi.py), so the two cannot drift.

Requests are strict, as the hand-written checks before them were: a string is never taken for a
boolean or a number, and an unknown field is refused (`extra="forbid"`). Enums take their values'
strings (JSON has no other way to send them).

Answers are built by the domain's `to_dict` methods; their models here describe them for the
document only. Their fields are described but none is promised (`required` is left out): a row an
older or newer version wrote may lack a field (rolling deploys).

Secrets (a git token, a notification key, a registry password) are `SecretStr`: hidden in every
repr, and written-only in the document.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StrictBool, StrictStr

from shared.domain.vocabulary import (
    BaseChangePolicy,
    BuilderKind,
    EventSource,
    Outcome,
    RunStatus,
    Trigger,
    TriggerType,
    UpdatePolicy,
    Watch,
    WaveState,
)

NonEmptyStr = Annotated[StrictStr, Field(min_length=1)]
StrMap = dict[str, StrictStr]
# base64 in a JSON string (OpenAPI's `format: byte`); decoded and checked by the service layer.
Base64 = Annotated[StrictStr, Field(json_schema_extra={"format": "byte"})]


class RequestBody(BaseModel):
    """A request body: strict types, no unknown fields."""

    model_config = ConfigDict(strict=True, extra="forbid")

    def given(self) -> dict[str, Any]:
        """The fields the caller sent (a PATCH changes only those), secrets revealed."""
        return {name: reveal(getattr(self, name)) for name in self.model_fields_set}


def reveal(value: Any) -> Any:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def _no_promised_fields(schema: dict[str, Any]) -> None:
    schema.pop("required", None)


class Answer(BaseModel):
    """An answer's shape, for the document (see the module docstring: no field is promised)."""

    model_config = ConfigDict(json_schema_extra=_no_promised_fields)


# ---- requests ------------------------------------------------------------------------------------
class TaskFields(RequestBody):
    """What a task is made of; on PATCH every field is optional and only those sent change.

    A field that cannot be null on a task (`context`, `images`, ...) has a default factory rather
    than a None default: absent means unchanged, and null is refused as the wrong type.
    """

    name: StrictStr = Field(default_factory=str)
    images: list[NonEmptyStr] = Field(default_factory=list,
                                      description="output image templates, e.g. `app:{{.Run.ID}}`")
    context: StrictStr = Field(default_factory=str,
                               description="a directory (its absolute path), or a git URL")
    context_archive: NonEmptyStr = Field(
        default_factory=str, json_schema_extra={"writeOnly": True, "format": "byte"},
        description="base64 of a .tar.gz of the context directory: built from where the builder cannot "
        "read the directory (the cloud)")
    dockerfile: StrictStr = "Dockerfile"
    branch: StrictStr | None = None
    build_args: StrMap = Field(default_factory=dict)
    secret_args: StrMap = Field(default_factory=dict, description="values are stored sealed, never shown")
    git_access_token: SecretStr | None = None
    base_image_trigger_enabled: StrictBool = True
    base_image_trigger_type: TriggerType = Field(default=TriggerType.RUNTIME, strict=False)
    platform: StrictStr = "linux"
    update_trigger_endpoint: StrictStr | None = Field(
        default=None, description="http(s) URL that receives a JSON POST when a run of the task starts "
        "and ends (docs/api.md); null removes it")
    update_trigger_secret: SecretStr | None = Field(
        default=None, description="signs those POSTs (X-Basetrigger-Signature-256)")
    update_policy: UpdatePolicy = Field(
        default=UpdatePolicy.REBUILD, strict=False,
        description="what a base update does: rebuild; rebase (swap the base's layers); auto (rebase "
        "only where that provably equals a rebuild, see docs/api.md)")
    rebase_check: StrictStr | None = Field(
        default=None, description="a command run in a rebased image before it is tagged (words split as "
        "a shell would, run without one), e.g. `node --version`; if it fails, the run rebuilds")
    base_change_policy: BaseChangePolicy = Field(
        default=BaseChangePolicy.ANY, strict=False,
        description="what a base change's classification means: any (rebuild on any change); "
        "skip-identical (`identical content` is not built, the decision says so); hold-os-release "
        "(`os release changed` holds the wave until `wave resume`)")
    schedule: StrictStr = Field(default_factory=str, description="cron in UTC: the task's timer t1 "
                                "(`--schedule`), e.g. `0 21 * * *`")
    commit_trigger_enabled: StrictBool = False
    pull_request_trigger_enabled: StrictBool = False


class TaskUpdate(TaskFields):
    """PATCH /tasks/{name}: only the fields sent change (`name`, if sent, must be the task's)."""


class TaskCreate(TaskFields):
    """POST /tasks."""

    name: StrictStr
    images: list[NonEmptyStr] = Field(description="output image templates, e.g. `app:{{.Run.ID}}`")
    context: StrictStr = Field(description="a directory (its absolute path), or a git URL")


class RunRequest(RequestBody):
    """POST /tasks/{name}/runs (the body may be left out)."""

    force: StrictBool = Field(default=False, description="pull the bases anew")


class QuickBuild(RequestBody):
    """POST /builds."""

    images: list[StrictStr]
    context: Base64 = Field(min_length=1, description="base64 of a .tar.gz of the context")
    dockerfile: StrictStr = "Dockerfile"
    build_args: StrMap = Field(default_factory=dict)
    platform: StrictStr = "linux"


class CredentialInput(RequestBody):
    """POST and PATCH /tasks/{name}/credentials (`login_server` names the one to change)."""

    login_server: StrictStr
    username: StrictStr | None = None
    password: SecretStr | None = None
    use_identity: StrictBool | None = None


class TimerInput(RequestBody):
    """POST /tasks/{name}/timers (name and schedule needed) and PATCH .../timers/{timer}."""

    name: StrictStr = Field(default_factory=str)
    schedule: StrictStr = Field(default_factory=str, description="cron, UTC, e.g. `0 21 * * *`")
    enabled: StrictBool = True


class RebuildRequest(RequestBody):
    """POST /bases/rebuild."""

    image: NonEmptyStr = Field(description="the base, e.g. localhost:5000/baseimages/node:9-alpine")
    digest: StrictStr | None = Field(default=None, description="recorded with the decision; default: "
                                     "what the tag points at now")


_TARGET = "IMAGE@DIGEST, e.g. node:20@sha256:…"


class QuarantineRequest(RequestBody):
    """POST /bases/quarantine."""

    image: StrictStr = Field(description=_TARGET)
    reason: StrictStr
    rollback: StrictBool = Field(
        default=False, description="also move the tags rebuilt on the digest back to the images they "
        "had before, recorded as runs with trigger `Rollback` (the answer's `rollback`)")


class ReleaseRequest(RequestBody):
    """POST /bases/release."""

    image: StrictStr = Field(description=_TARGET)


class DistributionNotification(BaseModel):
    """A CNCF distribution registry's notification envelope (each event is parsed on its own)."""

    events: list[dict[str, Any]]


# ---- answers -------------------------------------------------------------------------------------
class ErrorDetail(BaseModel):
    code: str
    message: str


class Error(BaseModel):
    """Every refusal: a 4xx (or a 5xx for the service's own failures) with a code and a message."""

    error: ErrorDetail


class Credential(Answer):
    login_server: str
    username: str | None
    password: bool = Field(description="whether one is stored; never the password")
    use_identity: bool


class Timer(Answer):
    name: str
    schedule: str = Field(description="cron, UTC")
    enabled: bool
    since: datetime = Field(description="slots before it never run")


class BaseTrigger(Answer):
    enabled: bool
    type: TriggerType


class UpdateTrigger(Answer):
    endpoint: str | None
    secret: bool


class Dependency(Answer):
    image: str
    digest: str | None
    runtime: bool


class SourceTriggers(Answer):
    commit: bool
    pull_request: bool


class Task(Answer):
    name: str
    images: list[str]
    context: str
    context_upload: str | None = Field(description="the stored archive a directory context is built from")
    branch: str | None
    dockerfile: str
    build_args: dict[str, str]
    secret_args: list[str] = Field(description="names only")
    git_access_token: bool
    base_image_trigger: BaseTrigger
    platform: str
    update_policy: UpdatePolicy
    rebase_check: str | None
    base_change_policy: BaseChangePolicy
    credentials: list[Credential]
    timers: list[Timer]
    source_triggers: SourceTriggers
    update_trigger: UpdateTrigger
    dependencies: list[Dependency]
    warnings: list[str] = Field(description="about the Dockerfile as last read, e.g. a secret arg read "
                                "through ARG")
    created_at: datetime
    updated_at: datetime
    etag: str | None = Field(description="the task's version, as the ETag header gives it (for If-Match)")


class Run(Answer):
    run_id: str
    status: RunStatus
    trigger: Trigger
    task: str | None
    platform: str
    cause: str | None
    event_id: str | None
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    duration_seconds: float | None
    output_images: list[str]
    output_digest: str | None
    base_digests: dict[str, str]
    reason: str | None
    attempt: int
    builder: BuilderKind | None = Field(description="what made the image: buildah, acr, or rebase "
                                        "(no build)")
    update_decision: str | None = Field(description="for a base update: what the task's update policy "
                                        "decided and why, e.g. `rebased: ...` or `rebuilt: RUN in final "
                                        "stage`")
    base_layers: dict[str, list[str]] = Field(description="each base's layer digests, as the image was "
                                              "built on them")
    final_base: str | None = Field(description="the image the built Dockerfile's final stage is FROM")
    final_stage: str | None = Field(description="what the auto rule found in that Dockerfile: `adds only "
                                    "files and metadata`, or why not (e.g. `RUN in final stage`)")
    force: bool
    wave_id: str | None = Field(description="the wave the run belongs to")
    released: bool = Field(description="false while a wave's run waits for its bases or for room")
    commit: str | None = Field(description="the commit a source trigger built")
    branch: str | None
    builder_run_id: str | None = Field(description="the builder's own id of the build (an ACR run id)")
    built_at: datetime | None = Field(description="when the image was built (before its push); null "
                                      "where the builder cannot tell (ACR)")
    pushed_at: datetime | None = Field(description="when the image was pushed")
    unsent_since: datetime | None = Field(description="released, and its queue message not sent since "
                                          "then (null: sent, or not released)")


class TaskDecision(Answer):
    task: str
    outcome: Outcome
    reason: str
    run_id: str | None


class Decision(Answer):
    event_id: str
    source: EventSource
    outcome: Outcome
    reason: str
    image: str | None
    digest: str | None
    runs: list[str]
    tasks: list[TaskDecision]
    time: datetime
    change: str | None = Field(description="what the pushed digest changed in the base (see BaseChange), "
                               "noted by the first worker of the wave it started; null until then")


class Base(Answer):
    base: str
    watch: Watch
    polled: bool
    digest: str | None
    platforms: dict[str, str]
    last_checked: datetime | None
    last_changed: datetime | None
    last_error_at: datetime | None
    last_error: str | None
    tasks: list[str]


class PlatformChangeNote(Answer):
    classification: str
    digest: str | None


class Wave(Answer):
    wave_id: str
    root: str = Field(description="what started it")
    event_id: str | None
    state: WaveState
    levels: int
    counts: dict[str, int] = Field(description="members by run status; Waiting: not released yet")
    reason: str | None
    breaker_base: list[int]
    created_at: datetime
    base_change: str | None = Field(description="what the base push changed, one line starting with its "
                                    "classification; null until the wave's first worker noted it, and "
                                    "for a manual run's wave")
    platform_changes: dict[str, PlatformChangeNote] = Field(
        description="the same change per platform of the base (platform -> its classification and "
                    "its new manifest digest); a task's base change policy judges its own platform's")
    pushed_at: datetime | None = Field(description="when the base was pushed (the registry's event time, "
                                       "or when a poll first saw the digest)")
    received_at: datetime | None = Field(description="when basetrigger read the base's event")


class WaveMember(Answer):
    task: str
    run_id: str
    level: int
    waits_for: list[str]
    released: bool
    outcome: RunStatus | None


class WaveDetail(Wave):
    members: list[WaveMember]


Classification = Literal["identical content", "metadata only", "packages", "os release changed"]


class FromTo(Answer):
    from_: Any = Field(alias="from")
    to: Any


class LayerChanges(Answer):
    added: list[str]
    removed: list[str]
    kept: list[str]
    recompressed: list[str]
    empty: list[str]


class PackageUpgrade(Answer):
    package: str
    from_: str = Field(alias="from")
    to: str


class PackageChanges(Answer):
    added: dict[str, str]
    removed: dict[str, str]
    upgraded: list[PackageUpgrade]


class OsRelease(Answer):
    from_: str | None = Field(alias="from")
    to: str | None


class PlatformChange(Answer):
    platform: str
    classification: Classification
    from_: str | None = Field(alias="from")
    to: str | None
    config: dict[str, FromTo] = Field(description="changed config fields (Env, Entrypoint, Cmd, User, "
                                      "WorkingDir, Labels, ExposedPorts, platform)")
    layers: LayerChanges
    packages: PackageChanges
    os_release: OsRelease
    notes: list[str]


class BaseChange(Answer):
    image: str
    from_: str = Field(alias="from")
    to: str
    classification: Classification
    summary: str
    platforms: list[PlatformChange]


class Quarantine(Answer):
    digest: str
    image: str
    reason: str
    by: str = Field(description="manual, or the circuit breaker of a wave")
    since: datetime


class RollbackReport(Answer):
    runs: list[Run] = Field(description="one Rollback run per tag moved back")
    decision: Decision


class Quarantined(Quarantine):
    """The answer to POST /bases/quarantine."""

    rollback: RollbackReport | None = Field(description="with `rollback: true`: what was moved back")


class LatencyFigures(Answer):
    events: int
    closed: int = Field(description="events whose dependents have all ended")
    p50_seconds: float | None
    p95_seconds: float | None
    worst_seconds: float | None
    missed_slo: int


class LatencyBase(LatencyFigures):
    base: str


class LatencyDependent(Answer):
    task: str
    run_id: str
    status: RunStatus
    queued: datetime | None
    started: datetime | None
    built: datetime | None
    pushed: datetime | None
    images: list[str]


class LatencyEvent(Answer):
    wave_id: str
    base: str
    digest: str
    pushed: datetime | None
    received: datetime | None
    planned: datetime | None
    last_pushed: datetime | None
    open: bool
    latency_seconds: float | None
    exposure_seconds: float | None
    dependents: list[LatencyDependent]


class LatencyMiss(Answer):
    task: str
    base: str
    why: Literal["late", "not pushed", "open", "stale"]
    exposure_seconds: float | None
    wave_id: str | None
    run_id: str | None
    detail: str


class LatencyReport(Answer):
    since_seconds: float
    slo_seconds: float
    now: datetime | None
    overall: LatencyFigures
    bases: list[LatencyBase]
    missed: list[LatencyMiss]
    events: list[LatencyEvent]


class ImpactTask(Answer):
    task: str
    level: int = Field(description="the wave it rebuilds in")
    rebuilds: bool = Field(description="false: trigger off, or a build-stage base under a Runtime trigger "
                           "(listed, not followed)")
    reason: str
    trigger: BaseTrigger
    outputs: list[str] = Field(description="output images other tasks can be built FROM (followed)")
    per_run_outputs: list[str] = Field(description="templates with {{.Run.ID}}: a new tag each run "
                                       "(not followed)")
    cycle: bool


class Edge(Answer):
    base: str
    task: str
    runtime: bool = Field(description="false: a build-stage base")
    triggers: bool


class ImpactLevel(Answer):
    level: int
    tasks: list[ImpactTask]


class Impact(Answer):
    image: str
    rebuilds: int
    tasks: int
    levels: list[ImpactLevel]
    edges: list[Edge]


class GraphImage(Answer):
    image: str
    produced_by: str | None


class Graph(Answer):
    tasks: list[ImpactTask]
    images: list[GraphImage]
    edges: list[Edge]


class StaleEntry(Answer):
    task: str
    base: str
    runtime: bool
    state: Literal["stale", "unknown"]
    built_digest: str
    current_digest: str | None
    source: Literal["registry", "events"] | None
    since: datetime | None
    cause: str = Field(description="trigger-disabled, not-a-runtime-dependency, rebuild-pending, "
                       "run-failed, no-event, base-unreachable or a decision outcome")
    reason: str
    event_id: str | None
    run_id: str | None


class TaskVerdict(Answer):
    time: datetime
    event_id: str
    image: str | None
    digest: str | None
    outcome: Outcome
    reason: str
    run_id: str | None
    run_status: RunStatus | None
    run_reason: str | None
    change: str | None = Field(description="what the pushed digest changed in the base (Decision.change)")
    update_decision: str | None = Field(description="what the task's update policy made of the run: "
                                        "`rebased: …` or `rebuilt: …`")


class ResealReport(Answer):
    """What re-encrypting the stored secrets with the first BASETRIGGER_SECRET_KEY key did."""

    resealed: list[str] = Field(description="tasks whose secrets were re-encrypted with the first key")
    current: list[str] = Field(description="tasks whose secrets already were")
    unreadable: list[str] = Field(description="tasks whose secrets no configured key opens (left as "
                                  "they were)")
    busy: list[str] = Field(description="tasks that changed on every attempt: rotate again")
    complete: bool = Field(description="every stored secret is sealed with the first key: the others "
                           "can go")
    primary_key: str | None = Field(description="fingerprint of the encrypting key (a SHA-256 prefix, "
                                    "not the key)")
    keys: int = Field(description="how many keys are configured")


class RunMigration(Answer):
    runs: int = Field(description="runs moved from the schema-2 partition")
    rows_removed: int = Field(description="old rows removed with them")


class DecisionMigration(Answer):
    decisions: int = Field(description="decisions moved from the schema-1 partition")
    markers: int = Field(description="event markers moved with them")
    holds: int = Field(description="stale push holds removed")


class WaveMigration(Answer):
    waves: int = Field(description="waves whose members were in one partition")
    members: int = Field(description="members moved into the wave's buckets")
    ready_rows: int = Field(description="ready rows moved with them")


class MigrationReport(Answer):
    runs: RunMigration
    decisions: DecisionMigration
    waves: WaveMigration


# Lists and other envelopes.
class TaskList(Answer):
    tasks: list[Task]


class RunList(Answer):
    runs: list[Run]
    continuation: str | None = Field(description="the last run id: pass it for the next page")


class DecisionList(Answer):
    decisions: list[Decision]


class WebhookDecisions(Answer):
    """A webhook's answer: the decision on each event it carried."""

    decisions: list[dict[str, Any]]


class WaveList(Answer):
    waves: list[Wave]
    continuation: str | None


class BaseList(Answer):
    interval_seconds: int
    bases: list[Base]


class CredentialList(Answer):
    task: str
    credentials: list[Credential]


class TimerList(Answer):
    timers: list[Timer]


class QuarantineList(Answer):
    quarantine: list[Quarantine]


class Settling(Answer):
    """A base within its settle window (BASETRIGGER_SETTLE_SECONDS)."""

    image: str
    digest: str = Field(description="the newest digest: the one its wave runs on")
    moved_at: datetime = Field(description="when the base moved to that digest")
    starts_at: datetime = Field(description="when its one wave starts if it stays still")
    deliveries: int


class SettlingList(Answer):
    bases: list[Settling]


class SettledList(Answer):
    dispatched: list[Decision] = Field(description="the decision of each base dispatched now")


class StaleCounts(Answer):
    tasks: int
    bases: int
    dependencies: int


class StaleReport(Answer):
    stale: list[StaleEntry]
    checked: StaleCounts


class TaskDecisions(Answer):
    task: str
    decisions: list[TaskVerdict]


class AnyObject(Answer):
    """A JSON object (a poll cycle's report, this document, a vendor's webhook payload)."""

    model_config = ConfigDict(extra="allow", json_schema_extra=_no_promised_fields)


# Every model the document names, in its components/schemas.
REQUESTS: tuple[type[RequestBody], ...] = (TaskCreate, TaskUpdate, RunRequest, QuickBuild, CredentialInput,
                                           TimerInput, RebuildRequest, QuarantineRequest, ReleaseRequest)
