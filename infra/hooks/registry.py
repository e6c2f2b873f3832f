#!/usr/bin/env python3
"""azd postprovision and postdeploy hook: deploy infra/registry.bicep into the registry's resource group.

What the app needs beside the registry (its roles on it, the registry's Event Grid system topic and
this environment's subscription) is deployed here with `az deployment group create`, not by azd:
`azd down` deletes every resource group azd's own deployment touched, so that deployment must never
touch the registry's group (main.bicep does not even refer to it). This hook runs after every
provision (without the subscription until the code is deployed) and after a deploy (with it, once
the function exists, since Event Grid refuses a subscription to a function that does not).

Before deploying it reads the registry's system topic as it is now, because a deployment sets a
topic's whole identity: every user-assigned identity the topic has is kept, except those that no
longer exist (an environment removed with `azd down` leaves its deleted identity on the shared
topic; handing it back as "kept" would fail or keep a dangling reference).

After a provision it also empties BASETRIGGER_SECRET_KEY_TO_STORE and BASETRIGGER_SECRET_KEY in the
azd environment once Key Vault holds the key: Key Vault is the key of record, no copy stays on disk.

    python3 infra/hooks/registry.py [--with-subscription]

Only the standard library and `az` (control plane): the machine that deploys need not have the app's
packages. Nothing secret is read, passed or printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from preprovision import (  # noqa: E402  (the hook's folder, put on the path above)
    KEY,
    TO_STORE,
    AzError,
    Stop,
    az,
    azd_env_set,
    check_groups,
    find_vault,
)


def say(text: str) -> None:
    print(f"registry: {text}", flush=True)


TEMPLATE = Path(__file__).resolve().parents[1] / "registry.bicep"
# main.bicep's outputs this deployment needs (azd writes them to the environment after a provision).
OUTPUTS = ("AZURE_USER_ASSIGNED_IDENTITY_ID", "AZURE_USER_ASSIGNED_IDENTITY_PRINCIPAL_ID",
           "AZURE_FUNCTION_APP_ID", "AZURE_STORAGE_ACCOUNT_ID", "EVENTGRID_DEADLETTER_CONTAINER")


@dataclass(frozen=True)
class Topic:
    name: str
    user_assigned: list[str]
    system_assigned: bool


def find_topic(env: Mapping[str, str], subscription: str) -> Topic | None:
    """The registry's system topic (a registry has at most one), or None."""
    group = env["ACR_RESOURCE_GROUP"]
    registry = (f"/subscriptions/{subscription}/resourceGroups/{group}/providers/"
                f"Microsoft.ContainerRegistry/registries/{env['ACR_NAME']}")
    try:
        topics = az("eventgrid", "system-topic", "list", "--subscription", subscription, "-g", group)
    except AzError as exc:
        if exc.not_found:
            return None
        raise
    for topic in topics or []:
        if isinstance(topic, dict) and str(topic.get("source", "")).lower() == registry.lower():
            identity = topic.get("identity") or {}
            kind = str(identity.get("type") or "")
            return Topic(name=str(topic["name"]),
                         user_assigned=sorted((identity.get("userAssignedIdentities") or {}).keys()),
                         system_assigned="systemassigned" in kind.replace(" ", "").lower())
    return None


def identity_exists(resource_id: str) -> bool:
    try:
        az("identity", "show", "--ids", resource_id)
    except AzError as exc:
        if exc.not_found:
            return False
        raise
    return True


def topic_identities(app_identity: str, topic: Topic | None) -> dict[str, dict[str, object]]:
    """The topic's userAssignedIdentities: the app's, and the topic's own ones that still exist
    (ids compare case-insensitively: ARM may return them in another case than they were set in)."""
    kept: dict[str, dict[str, object]] = {}
    for resource_id in topic.user_assigned if topic else []:
        if resource_id.lower() == app_identity.lower():
            continue
        if identity_exists(resource_id):
            kept[resource_id] = {}
        else:
            say(f"dropping {resource_id} from the system topic: that identity no longer exists")
    return {**kept, app_identity: {}}


def parameters(env: Mapping[str, str], topic: Topic | None, with_subscription: bool) -> dict[str, object]:
    """registry.bicep's parameters, in a deployment parameters file's form."""
    missing = [name for name in OUTPUTS if not env.get(name)]
    if missing:
        raise Stop(f"the azd environment lacks {', '.join(missing)}: run `azd provision` first")
    wanted = env.get("EVENTGRID_SYSTEM_TOPIC") or ""
    if topic and wanted and wanted.lower() != topic.name.lower():
        raise Stop(f"EVENTGRID_SYSTEM_TOPIC is {wanted!r}, but the registry's system topic is "
                   f"{topic.name!r} (a registry has only one): "
                   f"azd env set EVENTGRID_SYSTEM_TOPIC {topic.name}")
    values: dict[str, object] = {
        "environmentName": env["AZURE_ENV_NAME"],
        "registryName": env["ACR_NAME"],
        "principalId": env["AZURE_USER_ASSIGNED_IDENTITY_PRINCIPAL_ID"],
        "identityId": env["AZURE_USER_ASSIGNED_IDENTITY_ID"],
        "systemTopicName": topic.name if topic else wanted,
        "topicUserAssignedIdentities": topic_identities(env["AZURE_USER_ASSIGNED_IDENTITY_ID"], topic),
        "keepSystemAssignedIdentity": bool(topic and topic.system_assigned),
        "createSubscription": with_subscription,
        "functionAppId": env["AZURE_FUNCTION_APP_ID"],
        "deadLetterStorageAccountId": env["AZURE_STORAGE_ACCOUNT_ID"],
        "deadLetterContainerName": env["EVENTGRID_DEADLETTER_CONTAINER"],
    }
    for name, setting in (("eventMaxDeliveryAttempts", "EVENT_MAX_DELIVERY_ATTEMPTS"),
                          ("eventTimeToLiveInMinutes", "EVENT_TIME_TO_LIVE_MINUTES")):
        if env.get(setting):
            values[name] = int(env[setting])
    return {"$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#",
            "contentVersion": "1.0.0.0",
            "parameters": {name: {"value": value} for name, value in values.items()}}


def deploy(env: Mapping[str, str], subscription: str, document: dict[str, object]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "registry.parameters.json"
        path.write_text(json.dumps(document))
        az("deployment", "group", "create", "--subscription", subscription, "-g", env["ACR_RESOURCE_GROUP"],
           "-n", f"basetrigger-{env['AZURE_ENV_NAME']}", "-f", str(TEMPLATE), "-p", f"@{path}")


def forget_local_key(env: Mapping[str, str], subscription: str) -> None:
    """Once Key Vault holds the key, no copy stays in the azd environment's .env file."""
    if not (env.get(TO_STORE) or env.get(KEY)):
        return
    if find_vault(env, subscription).secret_exists:
        azd_env_set(TO_STORE, "")
        azd_env_set(KEY, "")
        say("Key Vault holds the secret key: it is no longer kept in the azd environment")


def run(env: Mapping[str, str], with_subscription: bool) -> None:
    check_groups(env)
    subscription = env.get("AZURE_SUBSCRIPTION_ID") or ""
    if not subscription or not env.get("ACR_NAME") or not env.get("AZURE_ENV_NAME"):
        raise Stop("AZURE_SUBSCRIPTION_ID, AZURE_ENV_NAME and ACR_NAME must be set")
    try:
        forget_local_key(env, subscription)
        topic = find_topic(env, subscription)
        document = parameters(env, topic, with_subscription)
        deploy(env, subscription, document)
    except AzError as exc:
        raise Stop(f"deploying infra/registry.bicep into {env['ACR_RESOURCE_GROUP']} failed: {exc}") from exc
    what = "roles, system topic and event subscription" if with_subscription else "roles and system topic"
    say(f"deployed the app's {what} in {env['ACR_RESOURCE_GROUP']} (outside azd: `azd down` leaves them)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--with-subscription", action="store_true",
                        help="also create the event subscription (once the function is deployed)")
    args = parser.parse_args()
    env = dict(os.environ)
    with_subscription = args.with_subscription or env.get("CREATE_EVENT_SUBSCRIPTION") == "true"
    try:
        run(env, with_subscription)
    except Stop as stop:
        print(f"registry: {stop}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
