"""All configuration basetrigger reads, in one place.

Every app setting the code uses is read here and nowhere else, so that the Bicep in `infra/` can be
checked against this module (tests/unit/test_infra.py). Values come from environment variables,
which is how the Functions host exposes app settings and `local.settings.json` values.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from shared.domain.builds import LOCAL_CONTEXT_ROOTS_SETTING, LocalContextRoots, UnpackLimits
from shared.domain.git_polling import GitPollError, parse_hosts
from shared.domain.settling import SettleError, SettleSettings
from shared.domain.watch_settings import PollSettings, WatchError, parse_watch, schedule_for
from shared.domain.waves import Brakes

# Azurite's well-known development account; its key is public and only valid against the emulator.
DEVSTORE_ACCOUNT = "devstoreaccount1"
# The Entra ID audience of ACR tokens in Azure's public cloud (azure-containerregistry's default).
DEFAULT_ACR_AUDIENCE = "https://containerregistry.azure.net"

# The app settings this module reads. Tests compare this list with the Bicep app settings.
APP_SETTINGS = (
    "AzureWebJobsStorage",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "AzureWebJobsStorage__blobServiceUri",
    "AzureWebJobsStorage__queueServiceUri",
    "AzureWebJobsStorage__tableServiceUri",
    "BASETRIGGER_TABLE_PREFIX",
    "BASETRIGGER_BUILD_QUEUE",
    "BASETRIGGER_RUN_ID_PREFIX",
    "BASETRIGGER_BUILDER",
    "BASETRIGGER_REGISTRY",
    "BASETRIGGER_REGISTRY_CA",
    "BASETRIGGER_BUILD_TIMEOUT",
    "BASETRIGGER_SECRET_KEY",
    "BASETRIGGER_WORK_DIR",
    "BASETRIGGER_CONTEXT_MAX_UNPACKED_MB",
    "BASETRIGGER_CONTEXT_MAX_FILES",
    "BASETRIGGER_LOCAL_CONTEXT_ROOTS",
    "BASETRIGGER_SIMULATE_TARGETS",
    "BASETRIGGER_MAX_RUNNING",
    "BASETRIGGER_WAVE_MAX_RUNNING",
    "BASETRIGGER_WAVE_BREAKER_FAILURES",
    "BASETRIGGER_WAVE_BREAKER_SHARE",
    "BASETRIGGER_ACR_SUBSCRIPTION_ID",
    "BASETRIGGER_ACR_RESOURCE_GROUP",
    "BASETRIGGER_ACR_NAME",
    # Bases anywhere: polling, sign-in to ACR, and the webhooks with their own secrets.
    "BASETRIGGER_POLL_INTERVAL",
    "BASETRIGGER_POLL_CONCURRENCY",
    "BASETRIGGER_WATCH",
    # Seconds a moving base must be still before its one wave starts, per registry (issue 19).
    "BASETRIGGER_SETTLE_SECONDS",
    "BASETRIGGER_ACR_AUDIENCE",
    "BASETRIGGER_HARBOR_AUTH",
    "BASETRIGGER_GITHUB_WEBHOOK_SECRET",
    "AZURE_CLIENT_ID",
    # Timer, source triggers and notifications (issue 18).
    "BASETRIGGER_TIMER_TICK",
    "BASETRIGGER_GITLAB_WEBHOOK_TOKEN",
    # The Event Grid custom topic run events are published to (infra/app/run-events.bicep).
    "BASETRIGGER_RUN_EVENTS_TOPIC",
    # Git hosts whose repositories send no webhooks: polled with git ls-remote.
    "BASETRIGGER_GIT_POLL",
)


class ConfigError(ValueError):
    """A setting is missing or has a value basetrigger cannot use."""


def _is_emulator_connection_string(value: str) -> bool:
    if value.strip() == "UseDevelopmentStorage=true":
        return True
    parts = dict(p.split("=", 1) for p in value.split(";") if "=" in p)
    endpoints = [v for k, v in parts.items() if k.endswith("Endpoint")]
    return parts.get("AccountName") == DEVSTORE_ACCOUNT and all(
        "127.0.0.1" in e or "localhost" in e for e in endpoints
    )


@dataclass(frozen=True)
class StorageTargets:
    """Per second: entities per table partition, entities and messages per account, messages per queue."""

    partition: float = 2000.0
    account: float = 20000.0
    queue: float = 2000.0

    @classmethod
    def parse(cls, text: str) -> StorageTargets:
        """`on` (the documented targets) or `PARTITION,ACCOUNT,QUEUE` per second (a scaled model)."""
        if text.strip().lower() in ("1", "on", "true", "azure"):
            return cls()
        parts = [p.strip() for p in text.split(",")]
        try:
            values = [float(p) for p in parts]
        except ValueError:
            values = []
        if len(values) != 3 or min(values) <= 0:
            raise ValueError(f"expected `on` or three positive numbers PARTITION,ACCOUNT,QUEUE, got {text!r}")
        return cls(*values)


@dataclass(frozen=True)
class StorageSettings:
    """How to reach Table, Queue and Blob storage.

    Either an emulator connection string (Azurite), or service URIs used with
    DefaultAzureCredential. Account keys against real endpoints are refused on purpose: the
    cloud deployment runs with `allowSharedKeyAccess: false` and managed identity.
    """

    connection_string: str | None = None
    table_uri: str | None = None
    queue_uri: str | None = None
    blob_uri: str | None = None
    client_id: str | None = None
    # The test bed only (BASETRIGGER_SIMULATE_TARGETS): Azure's scalability targets enforced on
    # Azurite (shared/adapters/throttling.py). A real account enforces its own.
    simulate_targets: StorageTargets | None = None


@dataclass(frozen=True)
class Settings:
    storage: StorageSettings
    table_prefix: str = "bt"
    build_queue: str = "build-runs"
    run_id_prefix: str = "da"
    builder: str = "buildah"
    # The registry that image names without a registry host are pushed to (ACR: the login server).
    registry_host: str | None = None
    registry_ca: str | None = None
    build_timeout_seconds: int = 3600
    secret_key: str | None = field(default=None, repr=False)  # never in a repr or a log
    work_dir: str = "/tmp/basetrigger"
    unpack_limits: UnpackLimits = UnpackLimits()
    # Where directory contexts are read in place (buildah only); none unless configured, and none
    # with ACR.
    local_context_roots: LocalContextRoots = LocalContextRoots()
    brakes: Brakes = Brakes()
    acr_subscription_id: str | None = None
    acr_resource_group: str | None = None
    acr_name: str | None = None
    polling: PollSettings = PollSettings()
    # Settle windows per registry (shared.domain.settling): 0 seconds, none, unless configured.
    settle: SettleSettings = SettleSettings()
    # The Entra ID audience ACR tokens are asked for (sovereign clouds have their own).
    acr_audience: str = DEFAULT_ACR_AUDIENCE
    # The Authorization header value Harbor's webhook policy sends; the secret GitHub signs with.
    harbor_auth: str | None = field(default=None, repr=False)
    github_webhook_secret: str | None = field(default=None, repr=False)
    # The secret token GitLab's webhook sends in X-Gitlab-Token (source triggers).
    gitlab_webhook_token: str | None = field(default=None, repr=False)
    # The endpoint of the Event Grid custom topic run events go to (None: published nowhere).
    run_events_topic: str | None = None
    # Git hosts polled for commits (shared.domain.git_polling): none unless BASETRIGGER_GIT_POLL says.
    git_poll_hosts: tuple[str, ...] = ()

    @property
    def poison_queue(self) -> str:
        return f"{self.build_queue}-poison"

    def table(self, name: str) -> str:
        return f"{self.table_prefix}{name}"

    def container(self, name: str) -> str:
        return f"{self.table_prefix.lower()}-{name}"


def _storage_from(env: Mapping[str, str]) -> StorageSettings:
    conn = env.get("AzureWebJobsStorage", "").strip()
    if conn:
        if not _is_emulator_connection_string(conn):
            raise ConfigError(
                "AzureWebJobsStorage holds a connection string for a real account; basetrigger "
                "accepts connection strings only for the Azurite emulator. Use identity-based "
                "settings (AzureWebJobsStorage__tableServiceUri, __queueServiceUri, "
                "__blobServiceUri, __credential=managedidentity, __clientId)."
            )
        return StorageSettings(connection_string=conn, simulate_targets=_simulated_targets(env))
    uris = {
        kind: env.get(f"AzureWebJobsStorage__{kind}ServiceUri", "").strip() or None
        for kind in ("table", "queue", "blob")
    }
    if not all(uris.values()):
        missing = [f"AzureWebJobsStorage__{k}ServiceUri" for k, v in uris.items() if not v]
        raise ConfigError(
            "storage is not configured: set AzureWebJobsStorage to an Azurite connection "
            f"string, or set {', '.join(missing)}"
        )
    return StorageSettings(
        table_uri=uris["table"],
        queue_uri=uris["queue"],
        blob_uri=uris["blob"],
        client_id=env.get("AzureWebJobsStorage__clientId") or env.get("AZURE_CLIENT_ID") or None,
    )


def _simulated_targets(env: Mapping[str, str]) -> StorageTargets | None:
    raw = env.get("BASETRIGGER_SIMULATE_TARGETS", "").strip()
    if not raw or raw.lower() in ("0", "off", "false"):
        return None
    try:
        return StorageTargets.parse(raw)
    except ValueError as exc:
        raise ConfigError(f"BASETRIGGER_SIMULATE_TARGETS: {exc}") from exc


def _positive(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) <= 0:
        raise ConfigError(f"{name} must be a positive whole number, not {raw!r}")
    return int(raw)


def _polling(env: Mapping[str, str]) -> PollSettings:
    defaults = PollSettings()
    interval = _positive(env, "BASETRIGGER_POLL_INTERVAL", defaults.interval_seconds)
    events = [env.get("BASETRIGGER_REGISTRY") or ""]
    if env.get("BASETRIGGER_ACR_NAME"):
        # The deployment's ACR notifies through its Event Grid system topic (infra/app/eventgrid.bicep).
        events.append(f"{env['BASETRIGGER_ACR_NAME'].lower()}.azurecr.io")
    try:
        schedule_for(interval)
        rules = parse_watch(env.get("BASETRIGGER_WATCH", ""))
    except WatchError as exc:
        raise ConfigError(str(exc)) from None
    return PollSettings(interval_seconds=interval,
                        concurrency=_positive(env, "BASETRIGGER_POLL_CONCURRENCY", defaults.concurrency),
                        rules=rules, event_registries=tuple(h.lower() for h in events if h))


def _settle(env: Mapping[str, str]) -> SettleSettings:
    try:
        return SettleSettings.parse(env.get("BASETRIGGER_SETTLE_SECONDS", ""))
    except SettleError as exc:
        raise ConfigError(str(exc)) from None


def poll_schedule(env: Mapping[str, str] | None = None) -> str:
    """The poll timer's schedule, read when function_app.py is imported (a binding cannot wait for
    the services). A bad interval falls back to the default here and fails `load` with its reason."""
    env = os.environ if env is None else env
    try:
        return schedule_for(_positive(env, "BASETRIGGER_POLL_INTERVAL", PollSettings().interval_seconds))
    except (ConfigError, WatchError):
        return schedule_for(PollSettings().interval_seconds)


# The timer function looks for due task timer slots this often (a minute: cron's finest unit).
DEFAULT_TIMER_TICK_SECONDS = 60


def timer_schedule(env: Mapping[str, str] | None = None) -> str:
    """The task timers' function schedule (BASETRIGGER_TIMER_TICK seconds; the test bed shortens it
    to test six-field schedules). Read when function_app.py is imported, as poll_schedule is."""
    env = os.environ if env is None else env
    try:
        return schedule_for(_positive(env, "BASETRIGGER_TIMER_TICK", DEFAULT_TIMER_TICK_SECONDS))
    except (ConfigError, WatchError):
        return schedule_for(DEFAULT_TIMER_TICK_SECONDS)


def load(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    builder = env.get("BASETRIGGER_BUILDER", "buildah").strip().lower()
    if builder not in ("buildah", "acr"):
        raise ConfigError(f"BASETRIGGER_BUILDER must be 'buildah' or 'acr', not {builder!r}")
    try:
        timeout = int(env.get("BASETRIGGER_BUILD_TIMEOUT", "3600"))
    except ValueError as exc:
        raise ConfigError("BASETRIGGER_BUILD_TIMEOUT must be a number of seconds") from exc
    secret_key = env.get("BASETRIGGER_SECRET_KEY") or None
    if secret_key and secret_key.startswith("@Microsoft.KeyVault("):
        # App Service leaves the reference text in place when it cannot resolve it.
        raise ConfigError("BASETRIGGER_SECRET_KEY is an unresolved Key Vault reference: check the "
                          "app's identity can read the secret (Key Vault Secrets User)")
    defaults = UnpackLimits()
    unpack_limits = UnpackLimits(
        max_bytes=_positive(env, "BASETRIGGER_CONTEXT_MAX_UNPACKED_MB", defaults.max_bytes // 2**20) * 2**20,
        max_files=_positive(env, "BASETRIGGER_CONTEXT_MAX_FILES", defaults.max_files),
    )
    try:
        local_roots = LocalContextRoots.parse(env.get(LOCAL_CONTEXT_ROOTS_SETTING, ""))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if builder != "buildah":
        local_roots = LocalContextRoots()  # ACR builds in Azure: it never sees the app's folders
    brakes = Brakes()
    share_text = env.get("BASETRIGGER_WAVE_BREAKER_SHARE", "").strip()
    try:
        share = float(share_text) if share_text else brakes.breaker_failure_share
    except ValueError as exc:
        raise ConfigError("BASETRIGGER_WAVE_BREAKER_SHARE must be a number between 0 and 1") from exc
    if not 0 < share <= 1:
        raise ConfigError("BASETRIGGER_WAVE_BREAKER_SHARE must be a number between 0 and 1")
    brakes = Brakes(
        max_running=_positive(env, "BASETRIGGER_MAX_RUNNING", brakes.max_running),
        wave_max_running=_positive(env, "BASETRIGGER_WAVE_MAX_RUNNING", brakes.wave_max_running),
        breaker_first_failures=_positive(env, "BASETRIGGER_WAVE_BREAKER_FAILURES",
                                         brakes.breaker_first_failures),
        breaker_failure_share=share,
    )
    prefix = env.get("BASETRIGGER_TABLE_PREFIX", "bt")
    if not prefix.isalnum() or not prefix[0].isalpha():
        raise ConfigError("BASETRIGGER_TABLE_PREFIX must be letters and digits, starting with a letter")
    return Settings(
        storage=_storage_from(env),
        table_prefix=prefix,
        build_queue=env.get("BASETRIGGER_BUILD_QUEUE", "build-runs"),
        run_id_prefix=env.get("BASETRIGGER_RUN_ID_PREFIX", "da"),
        builder=builder,
        registry_host=env.get("BASETRIGGER_REGISTRY") or None,
        registry_ca=env.get("BASETRIGGER_REGISTRY_CA") or None,
        build_timeout_seconds=timeout,
        secret_key=secret_key,
        work_dir=env.get("BASETRIGGER_WORK_DIR", "/tmp/basetrigger"),
        unpack_limits=unpack_limits,
        local_context_roots=local_roots,
        brakes=brakes,
        acr_subscription_id=env.get("BASETRIGGER_ACR_SUBSCRIPTION_ID") or None,
        acr_resource_group=env.get("BASETRIGGER_ACR_RESOURCE_GROUP") or None,
        acr_name=env.get("BASETRIGGER_ACR_NAME") or None,
        polling=_polling(env),
        settle=_settle(env),
        acr_audience=(env.get("BASETRIGGER_ACR_AUDIENCE") or DEFAULT_ACR_AUDIENCE).strip().rstrip("/"),
        harbor_auth=env.get("BASETRIGGER_HARBOR_AUTH") or None,
        github_webhook_secret=env.get("BASETRIGGER_GITHUB_WEBHOOK_SECRET") or None,
        gitlab_webhook_token=env.get("BASETRIGGER_GITLAB_WEBHOOK_TOKEN") or None,
        run_events_topic=_run_events_topic(env.get("BASETRIGGER_RUN_EVENTS_TOPIC")),
        git_poll_hosts=_git_poll_hosts(env.get("BASETRIGGER_GIT_POLL")),
    )


def _git_poll_hosts(value: str | None) -> tuple[str, ...]:
    try:
        return parse_hosts(value)
    except GitPollError as exc:
        raise ConfigError(str(exc)) from None


def _run_events_topic(value: str | None) -> str | None:
    """The topic's endpoint; only https (Event Grid publishes nowhere else, and a token goes with it)."""
    if not value or not value.strip():
        return None
    value = value.strip()
    if not value.startswith("https://"):
        raise ConfigError("BASETRIGGER_RUN_EVENTS_TOPIC must be the topic's https:// endpoint")
    return value
