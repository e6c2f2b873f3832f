"""The Bicep in infra/ against the code, with no Azure account and no Bicep compiler.

The Bicep CLI cannot be installed here, so these tests read the .bicep text with a small scanner
(strings, comments and brackets aware) and check what would otherwise only fail in a deployment or,
worse, at run time: app settings the code reads but the Bicep does not set (and the other way
round), storage names that differ from the code's, an Event Grid subscription aimed at a function
the app does not have, role definition ids that are not the documented built-in roles, keys or
connection strings leaking into settings or outputs, parameters without a description.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from shared import config

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
MAIN = INFRA / "main.bicep"

# The documented built-in role definition ids (Azure built-in roles reference), by role name.
BUILT_IN_ROLES = {
    "AcrPull": "7f951dda-4ed3-4680-a7ca-43fe172d538d",
    "Storage Blob Data Owner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "Storage Queue Data Contributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "Storage Table Data Contributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "Monitoring Metrics Publisher": "3913510d-42f4-4e42-8a64-420c390055eb",
    "Key Vault Secrets User": "4633458b-17de-408a-b874-0445c86b69e6",
    "EventGrid Data Sender": "d5a91429-5739-47e2-a06b-3470a27159e7",
}
# Where each role must be assigned: the resource type of the assignment's scope.
ROLE_SCOPES = {
    "AcrPull": "Microsoft.ContainerRegistry/registries",
    "Storage Blob Data Owner": "Microsoft.Storage/storageAccounts",
    "Storage Queue Data Contributor": "Microsoft.Storage/storageAccounts",
    "Storage Table Data Contributor": "Microsoft.Storage/storageAccounts",
    "Monitoring Metrics Publisher": "Microsoft.Insights/components",
    "Key Vault Secrets User": "Microsoft.KeyVault/vaults",
    "EventGrid Data Sender": "Microsoft.EventGrid/topics",
}
# The action each management operation of azure-mgmt-containerregistrytasks needs (resource provider
# operations reference), for the operations AcrBuilder may call.
ACR_OPERATION_ACTIONS = {
    "registries.schedule_run": "Microsoft.ContainerRegistry/registries/scheduleRun/action",
    "registries.get_build_source_upload_url":
        "Microsoft.ContainerRegistry/registries/listBuildSourceUploadUrl/action",
    "runs.get": "Microsoft.ContainerRegistry/registries/runs/read",
    "runs.get_log_sas_url": "Microsoft.ContainerRegistry/registries/runs/listLogSasUrl/action",
    "runs.cancel": "Microsoft.ContainerRegistry/registries/runs/cancel/action",
}
# `send_request` GETs the Azure-AsyncOperation or Location URL of an operation ACR accepted with 202:
# either of these two, depending on which URL ACR gives.
ACR_POLL_ACTIONS = {
    "Microsoft.ContainerRegistry/registries/operationStatuses/read",
    "Microsoft.ContainerRegistry/locations/operationResults/read",
}
# What AcrBuilder calls on the registry, exactly.
ACR_RUN_ACTIONS = set(ACR_OPERATION_ACTIONS.values()) | ACR_POLL_ACTIONS

# Settings in shared.config.APP_SETTINGS that the cloud deployment deliberately does not set.
NOT_SET_IN_AZURE = {
    # An Azurite connection string: config.py refuses connection strings for real accounts; the
    # cloud uses the AzureWebJobsStorage__* identity-based settings instead.
    "AzureWebJobsStorage",
    # The local stack's registry CA; ACR has a publicly trusted certificate.
    "BASETRIGGER_REGISTRY_CA",
    # Its default (/tmp/basetrigger) is the writable temp storage Flex Consumption instances have.
    "BASETRIGGER_WORK_DIR",
    # Directory contexts read in place on the machine that builds: buildah only, never ACR.
    "BASETRIGGER_LOCAL_CONTEXT_ROOTS",
    # Azure's scalability targets simulated on Azurite (the test bed); a real account has its own.
    "BASETRIGGER_SIMULATE_TARGETS",
    # How often task timers are looked at: the default (a minute) in Azure; the test bed shortens it.
    "BASETRIGGER_TIMER_TICK",
}
# Settings the Bicep sets that the Functions host reads, not basetrigger's code.
READ_BY_THE_HOST = {
    "APPLICATIONINSIGHTS_CONNECTION_STRING",  # ingestion endpoint; useless without an Entra token
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",  # makes the host use that token
}
# Settings a Flex Consumption app must not have (the plan refuses them; functionAppConfig says it).
# AzureWebJobsStorage__accountName is not among them: Flex accepts it (Microsoft's Flex quickstart
# sets it with __credential and __clientId). The Bicep sets the three __*ServiceUri settings instead
# because shared/config.py reads those, so the host and the code share one set of settings.
REFUSED_BY_FLEX = {
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_EXTENSION_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
}


# -- a small Bicep scanner -------------------------------------------------------------------------


def _strip_comments(text: str) -> str:
    """Remove // and /* */ comments, keeping strings (with their \\' escapes) intact."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c == "'":
            j = i + 1
            while j < n and text[j] != "'":
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        elif text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
        elif text.startswith("/*", i):
            i = text.index("*/", i) + 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _matching(text: str, start: int) -> int:
    """Index just past the bracket that closes the one at `start`, skipping strings."""
    depth, i = 0, start
    while i < len(text):
        c = text[i]
        if c == "'":
            i += 1
            while text[i] != "'":
                i += 2 if text[i] == "\\" else 1
        elif c in "{[(":
            depth += 1
        elif c in "}])":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ValueError(f"unbalanced bracket at {start}")


def _depth(text: str) -> int:
    """Brackets opened and not closed in text, outside strings."""
    depth, i = 0, 0
    while i < len(text):
        c = text[i]
        if c == "'":
            i += 1
            while i < len(text) and text[i] != "'":
                i += 2 if text[i] == "\\" else 1
        elif c in "{[(":
            depth += 1
        elif c in "}])":
            depth -= 1
        i += 1
    return depth


def _statements(text: str) -> list[tuple[str, str]]:
    """Top-level statements as (their decorators, the declaration)."""
    statements, decorators, buffer = [], [], ""
    for line in _strip_comments(text).splitlines():
        buffer = f"{buffer}\n{line}" if buffer else line
        if _depth(buffer) > 0:
            continue
        statement, buffer = buffer.strip(), ""
        if not statement:
            continue
        if statement.startswith("@"):
            decorators.append(statement)
            continue
        statements.append(("\n".join(decorators), statement))
        decorators = []
    return statements


def _split_top(body: str, separators: str = "\n") -> list[str]:
    """Split the inside of a bracket at top-level separators."""
    parts, depth, current, i = [], 0, [], 0
    while i < len(body):
        c = body[i]
        if c == "'":
            j = i + 1
            while body[j] != "'":
                j += 2 if body[j] == "\\" else 1
            current.append(body[i : j + 1])
            i = j + 1
            continue
        if c in "{[(":
            depth += 1
        elif c in "}])":
            depth -= 1
        if depth == 0 and c in separators:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(c)
        i += 1
    parts.append("".join(current).strip())
    return [p for p in parts if p]


def obj(text: str) -> dict[str, str]:
    """A Bicep object literal `{ key: value ... }` as key -> value text."""
    text = text.strip()
    assert text.startswith("{") and text.endswith("}"), f"not an object: {text[:60]}"
    entries = {}
    for line in _split_top(text[1:-1], "\n,"):
        key, _, value = line.partition(":")
        entries[key.strip().strip("'")] = value.strip()
    return entries


def arr(text: str) -> list[str]:
    text = text.strip()
    assert text.startswith("[") and text.endswith("]"), f"not an array: {text[:60]}"
    return _split_top(text[1:-1], "\n,")


class Bicep:
    """One .bicep file: its params, vars, resources, modules and outputs."""

    DECL = re.compile(r"^(param|var|resource|module|output)\s+(\w+)\s*(.*)$", re.S)

    def __init__(self, path: Path):
        self.path = path
        self.raw = path.read_text()
        self.params: dict[str, tuple[str, str]] = {}  # name -> (decorators, rest)
        self.vars: dict[str, str] = {}
        self.resources: dict[str, tuple[str, str]] = {}  # symbol -> (type, body)
        self.modules: dict[str, tuple[str, str]] = {}  # symbol -> (path, body)
        self.outputs: dict[str, str] = {}
        for decorators, declaration in _statements(self.raw):
            match = self.DECL.match(declaration)
            if not match:
                continue
            kind, name, rest = match.groups()
            if kind == "param":
                self.params[name] = (decorators, rest)
            elif kind == "var":
                self.vars[name] = rest.partition("=")[2].strip()
            elif kind == "output":
                self.outputs[name] = rest.partition("=")[2].strip()
            elif kind == "resource":
                rtype = re.match(r"'([^'@]+)@[^']+'", rest).group(1)
                self.resources[name] = (rtype, rest.partition("=")[2].strip())
            elif kind == "module":
                mpath = re.match(r"'([^']+)'", rest).group(1)
                self.modules[name] = (mpath, rest.partition("=")[2].strip())

    def resource_bodies(self, rtype: str) -> list[tuple[str, str, str | None]]:
        """(symbol, object body, loop array) of every declaration of a resource type."""
        found = []
        for symbol, (kind, body) in self.resources.items():
            if kind != rtype:
                continue
            loop = None
            if body.startswith("["):
                match = re.match(r"\[\s*for\s+\w+\s+in\s+(.+?):\s*(\{.*\})\s*\]$", body, re.S)
                loop, body = match.group(1).strip(), match.group(2)
            if re.match(r"if\s*\(", body):  # `if (cond)`, the condition may nest brackets
                body = body[_matching(body, body.index("(")):].strip()
            found.append((symbol, body, loop))
        return found

    def module_params(self, symbol: str) -> dict[str, str]:
        return obj(obj(self.modules[symbol][1])["params"])

    def resolve(self, expr: str, extra: dict[str, str] | None = None):
        """The literal value of an expression built from literals, vars and ${var} interpolation."""
        scope = {**self.vars, **(extra or {})}
        expr = expr.strip()
        if expr.startswith("'") and expr.endswith("'"):

            def sub(match):
                value = self.resolve(match.group(1), extra)
                if not isinstance(value, str):
                    raise ValueError(f"cannot resolve ${{{match.group(1)}}} in {self.path.name}")
                return value

            return re.sub(r"\$\{(\w+)\}", sub, expr[1:-1])
        if expr.startswith("["):
            return [self.resolve(item, extra) for item in arr(expr)]
        if re.fullmatch(r"-?\d+", expr):
            return int(expr)
        if expr in ("true", "false"):
            return expr == "true"
        if expr in scope:
            return self.resolve(scope[expr], extra)
        raise ValueError(f"cannot resolve {expr!r} in {self.path.name}")


@cache
def bicep(relative: str) -> Bicep:
    return Bicep(INFRA / relative)


def all_bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


def module_of(main: Bicep, relative: str) -> str:
    (symbol,) = [s for s, (path, _) in main.modules.items() if path == relative]
    return symbol


def value_in_main(relative: str, param: str):
    """What main.bicep passes to a module's parameter, resolved to a literal."""
    main = bicep("main.bicep")
    return main.resolve(main.module_params(module_of(main, relative))[param])


# -- the code's side -------------------------------------------------------------------------------

CONTRACT = (ROOT / "docs" / "contract.md").read_text()


def _contract_bullet(label: str) -> str:
    """A `- Label: ...` bullet of docs/contract.md with its continuation lines."""
    match = re.search(rf"^- {label}:(.*?)(?=^- |^#|\Z)", CONTRACT, re.M | re.S)
    assert match, f"docs/contract.md has no '- {label}:' bullet"
    return match.group(1)


def contract_tables() -> set[str]:
    return set(re.findall(r"`\{prefix\}(\w+)`", _contract_bullet("Tables")))


def contract_containers() -> tuple[set[str], str]:
    line = _contract_bullet("Blob containers")
    return set(re.findall(r"`\{prefix\}-([\w-]+)`", line)), re.search(
        r"dead letters: `([\w-]+)`", line
    ).group(1)


def code_storage_names() -> tuple[set[str], set[str]]:
    """Tables and containers the code opens (`storage.table("x")`, `storage.container("x")`)."""
    tables, containers = set(), set()
    for path in list((ROOT / "shared").rglob("*.py")) + list((ROOT / "functions").rglob("*.py")):
        text = path.read_text()
        tables |= set(re.findall(r"\.table\(\"(\w+)\"\)", text))
        containers |= set(re.findall(r"\.container\(\"([\w-]+)\"\)", text))
    return tables, containers


@cache
def app_functions() -> dict[str, set[str]]:
    """Function name -> its trigger binding types, from the app itself when it exists."""
    if (ROOT / "function_app.py").exists():
        # In a fresh interpreter: the worker calls get_functions() once per app object, and a
        # second call on the same object (another test's) raises a duplicate-name error.
        script = (
            "import json, function_app\n"
            "print(json.dumps({f.get_function_name(): [b.type for b in f.get_bindings()]"
            " for f in function_app.app.get_functions()}))"
        )
        done = subprocess.run(
            [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, f"function_app does not import:\n{done.stderr}"
        return {
            name: {t for t in types if t.endswith("Trigger")}
            for name, types in json.loads(done.stdout.strip().splitlines()[-1]).items()
        }
    names = re.findall(r"function `(\w+)` \(Event Grid trigger\)", CONTRACT)
    return {name: {"eventGridTrigger"} for name in names}


# -- app settings -------------------------------------------------------------------------


def bicep_app_settings() -> dict[str, str]:
    app = bicep("app/function-app.bicep")
    (body,) = [b for _, b, _ in app.resource_bodies("Microsoft.Web/sites/config") if "'appsettings'" in b]
    return obj(obj(body)["properties"])


def test_every_setting_the_code_reads_is_set_by_the_bicep_and_nothing_else():
    set_by_bicep = set(bicep_app_settings())
    read_by_code = set(config.APP_SETTINGS)

    missing = read_by_code - NOT_SET_IN_AZURE - set_by_bicep
    assert not missing, f"the code reads these settings but the Bicep does not set them: {sorted(missing)}"
    unknown = set_by_bicep - read_by_code - READ_BY_THE_HOST
    assert not unknown, f"the Bicep sets settings nothing reads: {sorted(unknown)}"
    assert not set_by_bicep & NOT_SET_IN_AZURE, "a local-only setting is set in Azure"
    assert not set_by_bicep & REFUSED_BY_FLEX


def test_the_exceptions_are_still_settings_the_code_reads():
    # An exception for a setting that no longer exists would hide a real mismatch.
    assert NOT_SET_IN_AZURE <= set(config.APP_SETTINGS)


def test_storage_settings_are_identity_based_without_keys():
    settings = bicep_app_settings()
    assert settings["AzureWebJobsStorage__credential"] == "'managedidentity'"
    for kind in ("blob", "queue", "table"):
        assert (
            settings[f"AzureWebJobsStorage__{kind}ServiceUri"]
            == f"storage.properties.primaryEndpoints.{kind}"
        )
    assert settings["AzureWebJobsStorage__clientId"] == "identityClientId"
    assert settings["AZURE_CLIENT_ID"] == "identityClientId"
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == (
        "'ClientId=${identityClientId};Authorization=AAD'"
    )
    main = bicep("main.bicep")
    passed = main.module_params(module_of(main, "app/function-app.bicep"))
    assert passed["identityClientId"] == "identity.properties.clientId"
    assert passed["identityId"] == "identity.id"


# Values only Azure knows, in the shape Azure gives them, for loading the settings as the app would.
AZURE_STAND_INS = {
    "storage.properties.primaryEndpoints.blob": "https://stx.blob.core.windows.net/",
    "storage.properties.primaryEndpoints.queue": "https://stx.queue.core.windows.net/",
    "storage.properties.primaryEndpoints.table": "https://stx.table.core.windows.net/",
    "identity.properties.clientId": "00000000-0000-0000-0000-000000000001",
    "subscription().subscriptionId": "00000000-0000-0000-0000-000000000002",
    "registryResourceGroupName": "rg-registry",
    "registryLoginServer": "contosoacr.azurecr.io",
    "registryName": "contosoacr",
    "runEvents.outputs.endpoint": "https://evgt-basetrigger-x.westeurope-1.eventgrid.azure.net/api/events",
    "applicationInsights.properties.ConnectionString": (
        "InstrumentationKey=00000000-0000-0000-0000-000000000003;"
        "IngestionEndpoint=https://westeurope-5.in.applicationinsights.azure.com/"
    ),
}


def cloud_app_settings() -> dict[str, str]:
    """The app settings as the app sees them in Azure: literals and main.bicep values resolved,
    Azure-assigned values stood in for, the Key Vault reference replaced by a key of the right form."""
    from cryptography.fernet import Fernet

    main = bicep("main.bicep")
    passed = main.module_params(module_of(main, "app/function-app.bicep"))

    def value_of(name: str) -> str:
        """A function-app.bicep identifier's value, through what main.bicep passes for it."""
        if name in AZURE_STAND_INS:
            return AZURE_STAND_INS[name]
        outer = passed[name]
        if outer in AZURE_STAND_INS:
            return AZURE_STAND_INS[outer]
        if outer in main.params:  # main's parameter default stands in for the deployer's value
            return str(main.resolve(main.params[outer][1].partition("=")[2]))
        return str(main.resolve(outer))

    resolved = {}
    for key, expr in bicep_app_settings().items():
        optional = re.fullmatch(r"(\w+) \? ('@Microsoft\.KeyVault\(.*\)') : ''", expr)
        if optional:  # a webhook secret's reference, set only when its parameter says so
            enabled = value_of(optional.group(1)) == "True"
            expr = optional.group(2) if enabled else "''"
        if expr.startswith("'@Microsoft.KeyVault("):
            resolved[key] = Fernet.generate_key().decode()
        elif expr.startswith("'"):
            resolved[key] = re.sub(r"\$\{(\w+)\}", lambda m: value_of(m.group(1)), expr[1:-1])
        else:
            wrapped = re.fullmatch(r"string\((\w+)\)", expr)
            resolved[key] = value_of(wrapped.group(1) if wrapped else expr)
    return resolved


def test_the_cloud_settings_load_as_an_acr_configuration():
    from shared.adapters.secret_box import SecretBox

    env = cloud_app_settings()
    settings = config.load(env)

    assert settings.builder == "acr"
    assert settings.storage.connection_string is None
    assert settings.storage.table_uri == AZURE_STAND_INS["storage.properties.primaryEndpoints.table"]
    assert settings.storage.client_id == AZURE_STAND_INS["identity.properties.clientId"]
    assert settings.registry_host == AZURE_STAND_INS["registryLoginServer"]
    assert (settings.acr_subscription_id, settings.acr_resource_group, settings.acr_name) == (
        AZURE_STAND_INS["subscription().subscriptionId"],
        "rg-registry",
        "contosoacr",
    )
    assert settings.build_timeout_seconds == 2700
    assert settings.run_events_topic == AZURE_STAND_INS["runEvents.outputs.endpoint"]
    SecretBox(settings.secret_key).open(SecretBox(settings.secret_key).seal({"k": "v"}))
    decorators, rest = bicep("main.bicep").params["secretKey"]
    assert "@secure()" in decorators


def test_a_provision_writes_the_secret_key_only_while_the_vault_has_none():
    """The key in Key Vault sealed every stored secret: a provision must never replace it. The hook
    passes a key only when the vault has none; the Bicep writes the secret only when given one, and
    lets the app read the secret whichever provision wrote it."""
    import importlib.util

    kv = bicep("app/keyvault.bicep")
    assert kv.resources["secret"][1].startswith("if (!empty(secretValue))")
    assert "=" in kv.params["secretValue"][1] and "@secure()" in kv.params["secretValue"][0]
    ((_, reader, _),) = kv.resource_bodies("Microsoft.Authorization/roleAssignments")
    assert obj(reader)["scope"] == "vault"  # the vault's secrets, whichever provision wrote them
    written = {symbol: body for symbol, body, _ in kv.resource_bodies("Microsoft.KeyVault/vaults/secrets")}
    assert obj(written["secret"])["name"] == "secretName"

    main = bicep("main.bicep")
    _, rest = main.params["secretKey"]
    assert rest.strip().endswith("= ''"), "secretKey must be optional: empty keeps the vault's key"
    assert main.module_params(module_of(main, "app/keyvault.bicep"))["secretValue"] == "secretKey"
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    spec = importlib.util.spec_from_file_location("preprovision", INFRA / "hooks" / "preprovision.py")
    hook = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("preprovision", hook)  # dataclasses look their module up there
    spec.loader.exec_module(hook)
    assert parameters["secretKey"]["value"] == "${" + hook.TO_STORE + "=}"
    assert main.resolve("secretKeyName") == hook.SECRET_NAME


def test_an_acr_build_ends_within_one_function_invocation():
    """The worker follows the ACR run inside the queue-triggered invocation: host.json must let it."""
    from shared.adapters.builders.acr import QUEUE_ALLOWANCE_SECONDS

    main = bicep("main.bicep")
    timeout = main.resolve(main.params["buildTimeoutSeconds"][1].partition("=")[2])
    hours, minutes, seconds = json.loads((ROOT / "host.json").read_text())["functionTimeout"].split(":")
    function_timeout = int(hours) * 3600 + int(minutes) * 60 + int(seconds)
    assert timeout + QUEUE_ALLOWANCE_SECONDS < function_timeout


# -- storage names -------------------------------------------------------------------------


def code_settings() -> config.Settings:
    """shared.config as the code loads it on the emulator: its defaults are the names the Bicep uses."""
    return config.load({"AzureWebJobsStorage": "UseDevelopmentStorage=true"})


def test_the_app_gets_the_code_s_default_prefix_queue_and_run_ids():
    settings = code_settings()
    assert value_in_main("app/function-app.bicep", "tablePrefix") == settings.table_prefix
    assert value_in_main("app/function-app.bicep", "buildQueueName") == settings.build_queue
    assert value_in_main("app/function-app.bicep", "runIdPrefix") == settings.run_id_prefix
    # ... and those parameters are what the app settings carry
    app_settings = bicep_app_settings()
    assert app_settings["BASETRIGGER_TABLE_PREFIX"] == "tablePrefix"
    assert app_settings["BASETRIGGER_BUILD_QUEUE"] == "buildQueueName"
    assert app_settings["BASETRIGGER_RUN_ID_PREFIX"] == "runIdPrefix"


def test_tables_are_the_code_s_tables():
    settings = code_settings()
    in_bicep = set(value_in_main("app/storage.bicep", "tableNames"))
    assert in_bicep == {settings.table(name) for name in contract_tables()}
    used_by_code, _ = code_storage_names()
    assert {settings.table(name) for name in used_by_code} <= in_bicep


def test_deploy_md_names_every_table_the_code_uses():
    settings = code_settings()
    deploy = (ROOT / "docs" / "deploy.md").read_text()
    missing = [settings.table(name) for name in contract_tables()
               if f"`{settings.table(name)}`" not in deploy]
    assert missing == [], f"docs/deploy.md does not list the tables {missing}"


def test_queues_are_the_build_queue_and_its_poison_queue():
    settings = code_settings()
    assert value_in_main("app/storage.bicep", "queueNames") == [settings.build_queue, settings.poison_queue]
    assert settings.poison_queue == f"{settings.build_queue}-poison"  # what the Functions host uses


def test_blob_containers_are_the_code_s_plus_dead_letters_and_the_deployment_package():
    settings = code_settings()
    main = bicep("main.bicep")
    items = arr(main.vars["containerNames"])
    deployment = [item for item in items if item == "deploymentContainerName"]
    assert deployment, "the Flex Consumption deployment container is not created"
    literal = {main.resolve(item) for item in items if item != "deploymentContainerName"}
    names, dead_letters = contract_containers()
    assert literal == {settings.container(name) for name in names} | {dead_letters}
    _, used_by_code = code_storage_names()
    assert {settings.container(name) for name in used_by_code} <= literal
    # ... and the deployment container is the one functionAppConfig deploys from
    app = bicep("app/function-app.bicep")
    (site,) = [b for _, b, _ in app.resource_bodies("Microsoft.Web/sites")]
    assert "${deploymentContainerName}" in site
    assert main.module_params(module_of(main, "app/function-app.bicep"))["deploymentContainerName"] == (
        "deploymentContainerName"
    )


def test_storage_account_refuses_shared_keys():
    storage = bicep("app/storage.bicep")
    ((_, body, _),) = storage.resource_bodies("Microsoft.Storage/storageAccounts")
    properties = obj(obj(body)["properties"])
    assert properties["allowSharedKeyAccess"] == "false"
    assert properties["allowBlobPublicAccess"] == "false"
    assert properties["minimumTlsVersion"] == "'TLS1_2'"


# -- Event Grid -------------------------------------------------------------------------


def event_subscription() -> dict[str, str]:
    grid = bicep("app/eventgrid.bicep")
    ((_, body, _),) = grid.resource_bodies("Microsoft.EventGrid/systemTopics/eventSubscriptions")
    return obj(obj(body)["properties"])


def test_event_grid_subscription_targets_an_event_grid_function_of_the_app():
    properties = event_subscription()
    destination = obj(properties["destination"])
    assert destination["endpointType"] == "'AzureFunction'"
    resource_id = obj(destination["properties"])["resourceId"]
    assert resource_id == "'${functionAppId}/functions/${functionName}'"
    registry = bicep("registry.bicep")
    grid_params = registry.module_params(module_of(registry, "app/eventgrid.bicep"))
    assert grid_params["functionAppId"] == "functionAppId"
    assert bicep("main.bicep").outputs["AZURE_FUNCTION_APP_ID"] == "functionApp.outputs.id"
    function_name = registry.resolve(grid_params["functionName"])

    functions = app_functions()
    assert function_name in functions, f"{function_name} is not a function of the app: {sorted(functions)}"
    assert functions[function_name] == {"eventGridTrigger"}


def test_event_grid_subscription_filters_retries_and_dead_letters():
    properties = event_subscription()
    assert arr(obj(properties["filter"])["includedEventTypes"]) == [
        "'Microsoft.ContainerRegistry.ImagePushed'"
    ]
    assert properties["eventDeliverySchema"] == "'EventGridSchema'"
    retry = obj(properties["retryPolicy"])
    assert set(retry) == {"maxDeliveryAttempts", "eventTimeToLiveInMinutes"}
    dead_letter = obj(properties["deadLetterWithResourceIdentity"])
    identity = obj(dead_letter["identity"])
    assert identity == {"type": "'UserAssigned'", "userAssignedIdentity": "identityId"}
    destination = obj(dead_letter["deadLetterDestination"])
    assert destination["endpointType"] == "'StorageBlob'"
    assert obj(destination["properties"])["blobContainerName"] == "deadLetterContainerName"
    _, dead_letters = contract_containers()
    main = bicep("main.bicep")
    assert main.resolve(main.outputs["EVENTGRID_DEADLETTER_CONTAINER"]) == dead_letters
    assert main.outputs["AZURE_USER_ASSIGNED_IDENTITY_ID"] == "identity.id"
    assert main.outputs["AZURE_STORAGE_ACCOUNT_ID"] == "storage.outputs.id"
    registry = bicep("registry.bicep")
    grid_params = registry.module_params(module_of(registry, "app/eventgrid.bicep"))
    for name in ("identityId", "deadLetterStorageAccountId", "deadLetterContainerName"):
        assert grid_params[name] == name  # registry.bicep's parameters, which the hook fills


def test_system_topic_is_on_the_existing_registry_in_its_resource_group():
    grid = bicep("app/eventgrid.bicep")
    ((_, body, _),) = grid.resource_bodies("Microsoft.EventGrid/systemTopics")
    topic = obj(body)
    properties = obj(topic["properties"])
    assert properties["topicType"] == "'Microsoft.ContainerRegistry.Registries'"
    assert properties["source"] == "registry.id"
    assert "existing" in grid.raw.split("resource registry ")[1].split("=")[0]
    registry = bicep("registry.bicep")
    assert "scope" not in obj(registry.modules[module_of(registry, "app/eventgrid.bicep")][1])
    assert registry.module_params(module_of(registry, "app/eventgrid.bicep"))["location"] == (
        "registry.location"
    )


def test_each_environment_has_its_own_event_subscription():
    """A fixed name let a second environment on the same registry re-point the first one's."""
    grid = bicep("app/eventgrid.bicep")
    (symbol,) = [s for s, (t, _) in grid.resources.items()
                 if t == "Microsoft.EventGrid/systemTopics/eventSubscriptions"]
    body = grid.resources[symbol][1]
    assert obj(body[body.index("{"):])["name"] == "subscriptionName"
    registry = bicep("registry.bicep")
    assert registry.module_params(module_of(registry, "app/eventgrid.bicep"))["subscriptionName"] == (
        "subscriptionName"
    )
    assert "environmentName" in registry.vars["subscriptionName"]


def test_the_system_topic_gets_the_identities_the_hook_computed_without_lambdas():
    """A deployment sets a topic's whole identity: the hook (infra/hooks/registry.py, tested in
    test_preprovision.py) reads the topic and passes every identity to keep plus the app's."""
    grid = bicep("app/eventgrid.bicep")
    ((_, body, _),) = grid.resource_bodies("Microsoft.EventGrid/systemTopics")
    identity = obj(obj(body)["identity"])
    assert identity["type"] == "keepSystemAssignedIdentity ? 'SystemAssigned, UserAssigned' : 'UserAssigned'"
    assert identity["userAssignedIdentities"] == "topicUserAssignedIdentities"
    assert "object" in grid.params["topicUserAssignedIdentities"][1]


@pytest.mark.parametrize("path", all_bicep_files(), ids=lambda p: str(p.relative_to(INFRA)))
def test_no_bicep_lambdas_which_checkov_s_own_parser_cannot_read(path):
    assert "=>" not in _strip_comments(path.read_text())


def test_azd_s_deployment_never_touches_the_registry_s_resource_group():
    """`azd down` deletes every resource group azd's deployment touched. main.bicep (azd's) deploys
    into its own group only and does not even refer to the registry; what the app needs beside the
    registry is in registry.bicep, which the postprovision hook deploys outside azd."""
    main = bicep("main.bicep")
    assert not [m for m in main.modules.values() if "scope" in obj(m[1])]
    assert "Microsoft.ContainerRegistry/registries" not in {t for t, _ in main.resources.values()}
    for relative, _ in main.modules.values():
        assert "registry" not in relative and "eventgrid" not in relative, relative
        module = bicep(relative)
        assert "resourceGroup(" not in _strip_comments(module.raw).replace("resourceGroup().", "")
    assert "=" not in main.params["registryResourceGroupName"][1], "the registry's group must be named"
    registry = bicep("registry.bicep")
    assert {path for path, _ in registry.modules.values()} == {"app/registry-access.bicep",
                                                               "app/eventgrid.bicep"}
    azure_yaml = (ROOT / "azure.yaml").read_text()
    assert "run: ./infra/hooks/postprovision.sh" in azure_yaml
    assert "registry.py" in (INFRA / "hooks" / "postprovision.sh").read_text()


# -- roles -------------------------------------------------------------------------

GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
ROLE_VAR = re.compile(rf"^var (\w+) = '({GUID.pattern})' // (.+)$", re.M | re.I)


def test_role_ids_are_named_variables_with_the_documented_built_in_ids():
    declared = {}
    for path in all_bicep_files():
        text = path.read_text()
        for name, guid, role in ROLE_VAR.findall(text):
            role = role.strip()
            assert role in BUILT_IN_ROLES, f"{path.name}: {name} is commented as unknown role {role!r}"
            assert guid.lower() == BUILT_IN_ROLES[role], (
                f"{path.name}: {role} is {BUILT_IN_ROLES[role]}, not {guid}"
            )
            declared[role] = (path, name)
        # No role id may appear anywhere but in such a declaration.
        loose = [m for m in GUID.findall(text) if not any(m == g for _, g, _ in ROLE_VAR.findall(text))]
        assert not loose, f"{path.name} has GUID literals outside named role variables: {loose}"
    assert set(declared) == set(BUILT_IN_ROLES)


def role_assignments() -> list[tuple[str, str, str, Bicep, str, str]]:
    """Every role assignment as (role var or `customRole.id`, scope resource type, name expression,
    file, scope symbol, the role expression the name uses)."""
    found = []
    for path in all_bicep_files():
        b = Bicep(path)
        for _, body, loop in b.resource_bodies("Microsoft.Authorization/roleAssignments"):
            entries = obj(body)
            properties = obj(entries["properties"])
            role_expr = properties["roleDefinitionId"]
            match = re.fullmatch(
                r"subscriptionResourceId\('Microsoft.Authorization/roleDefinitions', (\w+)\)", role_expr
            )
            scope_symbol = entries["scope"]
            scope_type = b.resources[scope_symbol][0]
            assert properties["principalType"] == "'ServicePrincipal'"
            if match:
                role = match.group(1)
                roles = arr(b.vars[loop]) if loop and role not in b.vars else [role]
            else:
                custom = re.fullmatch(r"(\w+)\.id", role_expr).group(1)
                assert b.resources[custom][0] == "Microsoft.Authorization/roleDefinitions"
                role = role_expr
                roles = [role_expr]
            for role_var in roles:
                found.append((role_var, scope_type, entries["name"], b, scope_symbol, role))
    return found


def test_each_role_is_assigned_on_the_resource_it_is_for_with_a_guid_name():
    assigned = {}
    for role_var, scope_type, name, b, scope_symbol, loop_var in role_assignments():
        args = _split_top(re.fullmatch(r"guid\((.*)\)", name, re.S).group(1), ",")
        assert len(args) == 3, f"{b.path.name}: role assignment name is not guid(scope.id, principalId, role)"
        assert args[0] == f"{scope_symbol}.id"
        assert args[1] == "principalId"
        assert args[2] in (loop_var, role_var)
        if role_var.endswith(".id"):
            assigned["custom ACR run role"] = scope_type
            continue
        role_names = {var: role.strip() for var, _, role in ROLE_VAR.findall(b.raw)}
        assigned[role_names[role_var]] = scope_type
    for role, scope_type in ROLE_SCOPES.items():
        assert assigned.get(role) == scope_type, f"{role} must be assigned on a {scope_type}"
    assert assigned.get("custom ACR run role") == "Microsoft.ContainerRegistry/registries"


def test_custom_acr_role_has_exactly_the_run_actions():
    access = bicep("app/registry-access.bicep")
    ((_, body, _),) = access.resource_bodies("Microsoft.Authorization/roleDefinitions")
    properties = obj(obj(body)["properties"])
    assert properties["type"] == "'CustomRole'"
    (permissions,) = arr(properties["permissions"])
    permissions = obj(permissions)
    assert set(access.resolve(permissions["actions"])) == ACR_RUN_ACTIONS
    for empty in ("notActions", "dataActions", "notDataActions"):
        assert arr(permissions[empty]) == []


def test_the_custom_acr_role_covers_every_operation_the_acr_builder_calls():
    """Read from the builder's source: a call added there without its action in the role fails here
    (runs.cancel once did: ACR answered 403 and the canceled run went on to push)."""
    source = (ROOT / "shared" / "adapters" / "builders" / "acr.py").read_text()
    called = set(re.findall(r"self\._client\.([\w.]+)\(", source))
    assert {"registries.schedule_run", "runs.get", "runs.cancel"} <= called  # the scan finds calls
    unknown = called - set(ACR_OPERATION_ACTIONS) - {"send_request"}
    assert not unknown, f"AcrBuilder calls {sorted(unknown)}: add their actions to ACR_OPERATION_ACTIONS"
    access = bicep("app/registry-access.bicep")
    ((_, body, _),) = access.resource_bodies("Microsoft.Authorization/roleDefinitions")
    (permissions,) = arr(obj(obj(body)["properties"])["permissions"])
    granted = set(access.resolve(obj(permissions)["actions"]))
    needed = {ACR_OPERATION_ACTIONS[op] for op in called if op in ACR_OPERATION_ACTIONS}
    if "send_request" in called:  # polling a 202's operation URL (shared/adapters/builders/acr.py)
        needed |= ACR_POLL_ACTIONS
    missing = needed - granted
    assert not missing, f"the custom ACR role lacks {sorted(missing)}"


# -- hygiene -------------------------------------------------------------------------


@pytest.mark.parametrize("path", all_bicep_files(), ids=lambda p: str(p.relative_to(INFRA)))
def test_every_parameter_has_a_required_or_optional_description(path):
    b = Bicep(path)
    assert b.params or path.name == "main.bicep"
    for name, (decorators, rest) in b.params.items():
        match = re.search(r"@description\('((?:[^'\\]|\\.)*)'\)", decorators)
        assert match, f"{path.name}: param {name} has no @description"
        text = match.group(1)
        has_default = "=" in rest
        expected = "Optional. " if has_default else "Required. "
        assert text.startswith(expected), (
            f"{path.name}: param {name} should start with {expected!r}: {text!r}"
        )


KEYISH = re.compile(
    r"listKeys|listAccountSas|listServiceSas|AccountKey|SharedAccessKey|connectionString|"
    r"primaryKey|secondaryKey|listCredentials|\.keys\b",
    re.I,
)


@pytest.mark.parametrize("path", all_bicep_files(), ids=lambda p: str(p.relative_to(INFRA)))
def test_no_keys_or_connection_strings_in_settings_or_outputs(path):
    b = Bicep(path)
    for name, expr in b.outputs.items():
        assert not KEYISH.search(expr), f"{path.name}: output {name} exposes a key or connection string"
        assert not re.search(r"secret", expr, re.I), f"{path.name}: output {name} looks like a secret"
    for name, (decorators, _) in b.params.items():
        if "@secure()" in decorators:
            assert name not in " ".join(b.outputs.values()), f"{path.name}: secure param {name} is output"
    code = _strip_comments(b.raw)
    # The one connection string allowed: Application Insights', which holds no secret (local auth is
    # disabled, so only an Entra ID token can ingest) and has no identity-based alternative.
    code = code.replace(
        "APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsights.properties.ConnectionString", ""
    )
    assert not KEYISH.search(code), f"{path.name}: {KEYISH.search(code).group(0)}"


def test_run_events_topic_takes_only_the_app_s_identity_and_its_endpoint_is_an_app_setting():
    events = bicep("app/run-events.bicep")
    ((_, body, _),) = events.resource_bodies("Microsoft.EventGrid/topics")
    properties = obj(obj(body)["properties"])
    assert properties["disableLocalAuth"] == "true"  # no keys, no SAS: Entra ID only
    assert properties["inputSchema"] == "'EventGridSchema'"  # what EventGridPublisherClient sends
    ((_, assignment, _),) = events.resource_bodies("Microsoft.Authorization/roleAssignments")
    assert obj(assignment)["scope"] == "topic"
    assert obj(obj(assignment)["properties"])["roleDefinitionId"].endswith("eventGridDataSenderRoleId)")

    main = bicep("main.bicep")
    symbol = module_of(main, "app/run-events.bicep")
    assert main.module_params(symbol)["principalId"] == "identity.properties.principalId"
    function_app = main.module_params(module_of(main, "app/function-app.bicep"))
    assert function_app["runEventsTopicEndpoint"] == f"{symbol}.outputs.endpoint"
    assert events.outputs["endpoint"] == "topic.properties.endpoint"
    assert bicep_app_settings()["BASETRIGGER_RUN_EVENTS_TOPIC"] == "runEventsTopicEndpoint"
    assert "BASETRIGGER_RUN_EVENTS_TOPIC" in config.APP_SETTINGS


def test_the_run_events_topic_setting_loads_as_an_https_endpoint():
    env = {"AzureWebJobsStorage": "UseDevelopmentStorage=true"}
    assert config.load(env).run_events_topic is None
    topic = "https://evgt-basetrigger-x.westeurope-1.eventgrid.azure.net/api/events"
    assert config.load({**env, "BASETRIGGER_RUN_EVENTS_TOPIC": topic}).run_events_topic == topic
    with pytest.raises(config.ConfigError, match="https://"):
        config.load({**env, "BASETRIGGER_RUN_EVENTS_TOPIC": "http://evgt.example/api/events"})


def test_application_insights_accepts_only_entra_id():
    monitoring = bicep("app/monitoring.bicep")
    ((_, body, _),) = monitoring.resource_bodies("Microsoft.Insights/components")
    properties = {k.lower(): v for k, v in obj(obj(body)["properties"]).items()}
    assert properties["disablelocalauth"] == "true"


def test_flex_consumption_python_311_with_the_instance_cap_as_a_parameter():
    app = bicep("app/function-app.bicep")
    ((_, plan, _),) = app.resource_bodies("Microsoft.Web/serverfarms")
    assert obj(obj(plan)["sku"]) == {"tier": "'FlexConsumption'", "name": "'FC1'"}
    ((_, site, _),) = app.resource_bodies("Microsoft.Web/sites")
    site_properties = obj(obj(site)["properties"])
    function_config = obj(site_properties["functionAppConfig"])
    assert obj(function_config["runtime"]) == {"name": "'python'", "version": "'3.11'"}
    scale = obj(function_config["scaleAndConcurrency"])
    assert scale["maximumInstanceCount"] == "maximumInstanceCount"
    auth = obj(obj(obj(function_config["deployment"])["storage"])["authentication"])
    assert auth == {"type": "'UserAssignedIdentity'", "userAssignedIdentityResourceId": "identityId"}
    assert obj(site)["kind"] == "'functionapp,linux'"
    main = bicep("main.bicep")
    assert "maximumInstanceCount" in main.params
    assert main.module_params(module_of(main, "app/function-app.bicep"))["maximumInstanceCount"] == (
        "maximumInstanceCount"
    )


def test_azd_files_match_the_template():
    main = bicep("main.bicep")
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert set(parameters) <= set(main.params), "main.parameters.json names parameters main.bicep lacks"
    required = {name for name, (_, rest) in main.params.items() if "=" not in rest}
    assert required <= set(parameters), "a required parameter has no value in main.parameters.json"

    azure_yaml = (ROOT / "azure.yaml").read_text()
    service = re.search(r"^services:\n  (\w+):\n((?:    .*\n)+)", azure_yaml, re.M)
    assert service, "azure.yaml has no service"
    name, body = service.groups()
    assert "host: function" in body and "language: python" in body and "project: ." in body
    assert main.resolve("serviceName") == name  # the azd-service-name tag azd deploys to
    for hook in re.findall(r"run: \./(infra/hooks/\S+)", azure_yaml):
        assert (ROOT / hook).exists(), f"azure.yaml runs {hook}, which does not exist"
