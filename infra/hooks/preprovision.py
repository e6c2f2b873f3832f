#!/usr/bin/env python3
"""azd preprovision hook: fill the azd environment with what infra/main.parameters.json reads.

azd runs this (through preprovision.sh / preprovision.ps1) before every provision, with the azd
environment's values as environment variables. It decides two things that must not be guessed:

1. The secret key. Key Vault's `basetrigger-secret-key` encrypted every stored secret build arg and
   git token; a provision that wrote another key there would make them unreadable. So the key is
   written only when the vault does not hold one yet (the first provision): the hook looks the
   vault up (by the azd-env-name tag, or AZURE_KEY_VAULT_NAME) and sets
   BASETRIGGER_SECRET_KEY_TO_STORE, which main.bicep writes to the vault only when it is not
   empty. On the first provision that is BASETRIGGER_SECRET_KEY, generated when unset; afterwards
   it is empty, whatever BASETRIGGER_SECRET_KEY says, so a new machine, CI or a recreated `.azure`
   folder keeps the vault's key. When the hook cannot tell (no `az`, not logged in, an ambiguous
   environment), it stops the provision instead of guessing. Rotation is deliberate and separate
   (docs/deploy.md, "Rotating the secret key").
2. Where the registry is. Its resource group must not be the app's: `azd down` deletes the app's
   group, and a registry in it with it. Its login server (ACR_LOGIN_SERVER) is read here so that
   main.bicep never refers to the registry's group; what the app needs there is deployed by the
   postprovision hook (registry.py, infra/registry.bicep), outside azd's deployment.

The generated key is in the azd environment (.azure/<env>/.env) only from here until the end of the
first provision: the postprovision hook empties BASETRIGGER_SECRET_KEY_TO_STORE and
BASETRIGGER_SECRET_KEY once Key Vault holds the key (Key Vault is the key of record).

Only the standard library: the deploying machine need not have the app's packages. Only `az`
control-plane reads are made (Reader suffices): the key's value is never read or printed.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass

SECRET_NAME = "basetrigger-secret-key"  # main.bicep's secretKeyName
TO_STORE = "BASETRIGGER_SECRET_KEY_TO_STORE"  # what main.parameters.json passes as secretKey
KEY = "BASETRIGGER_SECRET_KEY"


class Stop(Exception):
    """The provision must not go on; the message says why and what to do."""


class AzError(Exception):
    """An `az` command failed; `not_found` when Azure answered that the resource does not exist."""

    def __init__(self, message: str, not_found: bool = False):
        super().__init__(message)
        self.not_found = not_found


def say(text: str) -> None:
    print(f"preprovision: {text}", flush=True)


# -- the decisions (pure) -----------------------------------------------------------------------


@dataclass(frozen=True)
class Vault:
    """What is known about the environment's Key Vault and its secret key."""

    name: str | None = None  # None: no vault yet (first provision)
    secret_exists: bool = False


@dataclass(frozen=True)
class KeyDecision:
    to_store: str  # the value for BASETRIGGER_SECRET_KEY_TO_STORE ("" keeps the vault's)
    generated: str | None  # a new key (stored in Key Vault by this provision, kept nowhere else)
    message: str


def fernet_keys(value: str) -> list[str]:
    """The Fernet keys of a BASETRIGGER_SECRET_KEY value (comma or space separated), or Stop."""
    keys = [k for k in re.split(r"[\s,]+", value) if k]
    for key in keys:
        try:
            ok = len(base64.urlsafe_b64decode(key.encode())) == 32 and len(key) == 44
        except (binascii.Error, ValueError):
            ok = False
        if not ok:
            raise Stop(f"{KEY} must hold Fernet keys (44 characters: URL-safe base64 of 32 bytes), "
                       "separated by commas or spaces")
    if not keys:
        raise Stop(f"{KEY} is set but holds no key")
    return keys


def new_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def decide_secret_key(env_key: str | None, vault: Vault) -> KeyDecision:
    if vault.secret_exists:
        note = f"Key Vault {vault.name} already holds {SECRET_NAME}: it is kept, not overwritten"
        if env_key:
            note += (f" ({KEY} in the azd environment is not written; to change the key, rotate it as "
                     "docs/deploy.md says)")
        return KeyDecision(to_store="", generated=None, message=note)
    if env_key:
        fernet_keys(env_key)
        where = f"Key Vault {vault.name}" if vault.name else "the new Key Vault"
        return KeyDecision(to_store=env_key, generated=None,
                           message=f"{where} holds no {SECRET_NAME} yet: storing {KEY} from the azd "
                           "environment")
    key = new_key()
    return KeyDecision(to_store=key, generated=key,
                       message=f"generated {KEY} (it encrypts secret build args and git tokens); "
                       "it is stored in Key Vault by this provision and never replaced by later ones")


def check_groups(env: Mapping[str, str]) -> None:
    """Stop unless the registry's resource group is named and is not the app's."""
    registry_group = env.get("ACR_RESOURCE_GROUP") or ""
    app_group = env.get("AZURE_RESOURCE_GROUP") or ""
    if not registry_group:
        raise Stop("set the registry's resource group: azd env set ACR_RESOURCE_GROUP <its-resource-group>")
    if not app_group:
        raise Stop("set the resource group the app is deployed to (a new one, not the registry's): "
                   "azd env set AZURE_RESOURCE_GROUP rg-basetrigger-<environment>")
    if registry_group.lower() == app_group.lower():
        raise Stop(f"the app's resource group {app_group} is the registry's: `azd down` deletes the app's "
                   "resource group, and the registry with it. Deploy the app to a resource group of its "
                   "own: azd env set AZURE_RESOURCE_GROUP rg-basetrigger-<environment>")


# -- reading Azure (az, control plane only) ---------------------------------------------------------


def az(*args: str) -> object:
    exe = shutil.which("az")
    if exe is None:
        raise AzError("the Azure CLI (az) is not installed")
    done = subprocess.run([exe, *args, "--only-show-errors", "-o", "json"], capture_output=True, text=True,
                          timeout=300)
    if done.returncode != 0:
        message = (done.stderr.strip().splitlines() or [f"az {args[0]} failed"])[-1]
        # A missing resource or group answers "not found"; a missing subscription is not that case.
        not_found = (bool(re.search(r"NotFound|was not found|could not be found", done.stderr))
                     and "SubscriptionNotFound" not in done.stderr)
        raise AzError(message, not_found=not_found)
    return json.loads(done.stdout) if done.stdout.strip() else None


def find_vault(env: Mapping[str, str], subscription: str) -> Vault:
    """The environment's Key Vault: the one azd recorded, else the one tagged with its name."""
    group = env.get("AZURE_RESOURCE_GROUP") or None
    recorded = env.get("AZURE_KEY_VAULT_NAME") or None
    if recorded:
        try:
            vault = az("keyvault", "show", "--subscription", subscription, "--name", recorded)
        except AzError as exc:
            if not exc.not_found:
                raise
            say(f"AZURE_KEY_VAULT_NAME={recorded}, but that vault does not exist (deleted? `az keyvault "
                f"recover --name {recorded}` brings a soft-deleted one back with its key)")
            return Vault()
        assert isinstance(vault, dict)
        return Vault(name=recorded, secret_exists=secret_exists(str(vault["id"])))
    listing = ["keyvault", "list", "--subscription", subscription] + (["-g", group] if group else [])
    try:
        vaults = az(*listing)
    except AzError as exc:
        if group and exc.not_found:  # the resource group does not exist yet: a first provision
            return Vault()
        raise
    name = env.get("AZURE_ENV_NAME", "")
    tagged = [v for v in (vaults if isinstance(vaults, list) else [])
              if isinstance(v, dict) and (v.get("tags") or {}).get("azd-env-name") == name]
    if len(tagged) > 1:
        where = ", ".join(f"{v.get('name')} ({v.get('resourceGroup')})" for v in tagged)
        raise Stop(f"several Key Vaults are tagged azd-env-name={name}: {where}; "
                   "set AZURE_RESOURCE_GROUP to the one this environment deploys to")
    if not tagged:
        return Vault()
    return Vault(name=str(tagged[0]["name"]), secret_exists=secret_exists(str(tagged[0]["id"])))


def secret_exists(vault_id: str) -> bool:
    # A control-plane read (Microsoft.KeyVault/vaults/secrets): it tells whether the secret exists
    # without the data-plane rights reading its value would need.
    try:
        az("resource", "show", "--ids", f"{vault_id}/secrets/{SECRET_NAME}")
    except AzError as exc:
        if exc.not_found:
            return False
        raise
    return True


def login_server(env: Mapping[str, str], subscription: str) -> str:
    registry = az("acr", "show", "--subscription", subscription, "-g", env["ACR_RESOURCE_GROUP"],
                  "--name", env["ACR_NAME"])
    if not isinstance(registry, dict) or not registry.get("loginServer"):
        raise AzError(f"az acr show answered no login server for {env['ACR_NAME']}")
    return str(registry["loginServer"])


# -- the hook -------------------------------------------------------------------------------------


def azd_env_set(name: str, value: str) -> None:
    exe = shutil.which("azd")
    if exe is None:
        raise Stop("azd is not on PATH")
    # The value goes through argv, not a shell; azd prints nothing of it.
    done = subprocess.run([exe, "env", "set", name, value], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise Stop(f"azd env set {name} failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")


def run(env: Mapping[str, str]) -> None:
    if not env.get("ACR_NAME"):
        raise Stop("basetrigger builds on an existing Azure Container Registry: set it first with\n"
                   "  azd env set ACR_NAME <registry-name>\n"
                   "  azd env set ACR_RESOURCE_GROUP <its-resource-group>  # if not this environment's group")
    subscription = env.get("AZURE_SUBSCRIPTION_ID")
    if not subscription:
        raise Stop("AZURE_SUBSCRIPTION_ID is not set: azd env set AZURE_SUBSCRIPTION_ID <id>")
    check_groups(env)
    try:
        vault = find_vault(env, subscription)
        server = login_server(env, subscription)
    except AzError as exc:
        raise Stop(f"cannot read the deployment's state with az ({exc}). It decides whether Key Vault "
                   "already holds the secret key (which a provision must never replace) and where the "
                   "registry is: install the Azure CLI, `az login`, and run the provision again") from exc

    decision = decide_secret_key(env.get(KEY) or None, vault)
    # Only for this provision: the postprovision hook empties it once the vault holds the key.
    azd_env_set(TO_STORE, decision.to_store)
    say(decision.message)
    azd_env_set("ACR_LOGIN_SERVER", server)


def main() -> int:
    try:
        run(os.environ)
    except Stop as stop:
        print(f"preprovision: {stop}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
