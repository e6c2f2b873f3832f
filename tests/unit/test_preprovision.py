"""The azd preprovision hook (infra/hooks/preprovision.sh -> preprovision.py), run as azd runs it,
with stand-ins for the `az` and `azd` commands on PATH.

The stand-ins keep Azure's state in a JSON file: `az` answers the control-plane reads the hook makes
from it (and refuses anything else), `azd env set` writes the azd environment. After each hook run,
`provision()` applies what infra/app/keyvault.bicep does with the value the hook chose (write the
secret only when it is not empty; tests/unit/test_infra.py checks the Bicep says so), so a sequence
of provisions shows whether the vault's key survives.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[2]
HOOK = ROOT / "infra" / "hooks" / "preprovision.sh"
POSTPROVISION = ROOT / "infra" / "hooks" / "postprovision.sh"
REGISTRY_HOOK = ROOT / "infra" / "hooks" / "registry.py"
APP_IDENTITY = ("/subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/rg-app/providers/"
                "Microsoft.ManagedIdentity/userAssignedIdentities/id-basetrigger-abc")
OUTPUTS = {  # main.bicep's outputs, as azd writes them to the environment after a provision
    "AZURE_USER_ASSIGNED_IDENTITY_ID": APP_IDENTITY,
    "AZURE_USER_ASSIGNED_IDENTITY_PRINCIPAL_ID": "11111111-0000-0000-0000-000000000000",
    "AZURE_FUNCTION_APP_ID": "/subscriptions/x/resourceGroups/rg-app/providers/Microsoft.Web/sites/func-abc",
    "AZURE_STORAGE_ACCOUNT_ID": "/subscriptions/x/resourceGroups/rg-app/providers/Microsoft.Storage/"
                                "storageAccounts/stabc",
    "EVENTGRID_DEADLETTER_CONTAINER": "eventgrid-deadletter",
}
SUB = "00000000-1111-2222-3333-444444444444"
SECRET = "basetrigger-secret-key"
TO_STORE = "BASETRIGGER_SECRET_KEY_TO_STORE"
REGISTRY_ID = (f"/subscriptions/{SUB}/resourceGroups/rg-images/providers/"
               "Microsoft.ContainerRegistry/registries/contosoacr")



def vault_id(group: str, name: str) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/{group}/providers/Microsoft.KeyVault/vaults/{name}"


FAKE_AZ = r'''#!PYTHON
"""A stand-in for the Azure CLI: control-plane reads answered from $FAKE_AZ_STATE."""
import json, os, sys

args = [a for a in sys.argv[1:] if a not in ("--only-show-errors",)]
with open(os.environ["FAKE_AZ_LOG"], "a") as log:
    log.write(json.dumps(args) + "\n")
state = json.load(open(os.environ["FAKE_AZ_STATE"]))


def opt(name):
    return args[args.index(name) + 1] if name in args else None


def fail(message, code=1):
    sys.stderr.write(message + "\n")
    sys.exit(code)


def out(value):
    print(json.dumps(value))
    sys.exit(0)


if not state.get("logged_in", True):
    fail("ERROR: Please run 'az login' to setup account.")
group = opt("-g")
if group and group not in state["groups"]:
    fail(f"ERROR: (ResourceGroupNotFound) Resource group '{group}' could not be found.", 3)
public = lambda v: {k: v[k] for k in ("id", "name", "resourceGroup", "tags")}
if args[:2] == ["keyvault", "list"]:
    out([public(v) for v in state["vaults"] if not group or v["resourceGroup"] == group])
if args[:2] == ["keyvault", "show"]:
    for v in state["vaults"]:
        if v["name"] == opt("--name"):
            out(public(v))
    fail(f"ERROR: (ResourceNotFound) The Resource 'Microsoft.KeyVault/vaults/{opt('--name')}' "
         "was not found.", 3)
if args[:2] == ["resource", "show"]:
    ident = opt("--ids")
    for v in state["vaults"]:
        for name in v["secrets"]:
            if ident == f"{v['id']}/secrets/{name}":
                out({"id": ident, "name": name, "properties": {"attributes": {"enabled": True}}})  # no value
    fail(f"ERROR: (ResourceNotFound) The Resource '{ident}' was not found.", 3)
if args[:3] == ["eventgrid", "system-topic", "list"]:
    out([t for t in state["topics"] if t["resourceGroup"] == group])
if args[:2] == ["acr", "show"]:
    out({"name": opt("--name"), "loginServer": opt("--name") + ".azurecr.io"})
if args[:2] == ["identity", "show"]:
    if opt("--ids") in state.get("identities", []):
        out({"id": opt("--ids")})
    fail(f"ERROR: (ResourceNotFound) The Resource '{opt('--ids')}' was not found.", 3)
if args[:3] == ["deployment", "group", "create"]:
    parameters = json.load(open(opt("-p").removeprefix("@")))["parameters"]
    state.setdefault("deployments", []).append({"group": group, "name": opt("-n"), "template": opt("-f"),
                                                "parameters": parameters})
    json.dump(state, open(os.environ["FAKE_AZ_STATE"], "w"))
    out({"properties": {"provisioningState": "Succeeded"}})
fail(f"fake az: unexpected command {args}", 2)
'''

FAKE_AZD = r'''#!PYTHON
"""A stand-in for azd: `azd env set NAME VALUE` into $FAKE_AZD_ENV."""
import json, os, sys

if sys.argv[1:3] != ["env", "set"] or len(sys.argv) != 5:
    sys.stderr.write(f"fake azd: unexpected command {sys.argv[1:]}\n")
    sys.exit(2)
path = os.environ["FAKE_AZD_ENV"]
env = json.load(open(path))
env[sys.argv[3]] = sys.argv[4]
json.dump(env, open(path, "w"))
'''


class Azure:
    """The fake Azure (state file), the azd environment of one machine, and the stand-in commands."""

    def __init__(self, tmp_path: Path, **state):
        self.dir = tmp_path
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        for name, text in (("az", FAKE_AZ), ("azd", FAKE_AZD)):
            script = self.bin / name
            script.write_text(text.replace("#!PYTHON", f"#!{sys.executable}", 1))
            script.chmod(0o755)
        self.state_file = tmp_path / "azure.json"
        self.log_file = tmp_path / "az.log"
        self.state = {"logged_in": True, "groups": ["rg-images"], "vaults": [], "topics": [], **state}
        self.save()

    def save(self) -> None:
        self.state_file.write_text(json.dumps(self.state))

    @property
    def vault_key(self) -> str | None:
        vaults = self.state["vaults"]
        return vaults[0]["secrets"].get(SECRET) if vaults else None

    def az_calls(self) -> list[list[str]]:
        return [json.loads(line) for line in self.log_file.read_text().splitlines()]

    def machine(self, **values) -> Machine:
        """A machine with a fresh azd environment (`azd env new prod` and the documented `env set`s)."""
        env = {"AZURE_ENV_NAME": "prod", "AZURE_SUBSCRIPTION_ID": SUB, "AZURE_RESOURCE_GROUP": "rg-app",
               "ACR_NAME": "contosoacr", "ACR_RESOURCE_GROUP": "rg-images", **values}
        return Machine(self, {k: v for k, v in env.items() if v is not None})


class Machine:
    def __init__(self, azure: Azure, env: dict[str, str]):
        self.azure = azure
        self.env_file = azure.dir / f"azd-env-{id(self)}.json"
        self.env_file.write_text(json.dumps(env))

    @property
    def env(self) -> dict[str, str]:
        return json.loads(self.env_file.read_text())

    def hook(self, path: str | None = None, script: Path = HOOK, *args: str) -> subprocess.CompletedProcess:
        """A hook as azd runs it (preprovision by default): the azd environment's values as variables."""
        azure = self.azure
        process_env = {
            "PATH": path if path is not None else f"{azure.bin}{os.pathsep}{os.environ['PATH']}",
            "FAKE_AZ_STATE": str(azure.state_file), "FAKE_AZ_LOG": str(azure.log_file),
            "FAKE_AZD_ENV": str(self.env_file), **self.env,
        }
        command = ["sh", str(script)] if script.suffix == ".sh" else [sys.executable, str(script)]
        return subprocess.run([*command, *args], env=process_env, capture_output=True, text=True, timeout=60)

    def provision(self) -> subprocess.CompletedProcess:
        """The hook, then what the Bicep does with its choice (only if the hook let it go on)."""
        done = self.hook()
        if done.returncode != 0:
            return done
        env, azure = self.env, self.azure
        to_store = env[TO_STORE]
        if "rg-app" not in azure.state["groups"]:
            azure.state["groups"].append("rg-app")
        if not azure.state["vaults"]:
            azure.state["vaults"].append({
                "name": "kv-abc123", "resourceGroup": "rg-app", "tags": {"azd-env-name": "prod"},
                "id": vault_id("rg-app", "kv-abc123"),
                "secrets": {},
            })
        if to_store:  # keyvault.bicep: `resource secret ... = if (!empty(secretValue))`
            azure.state["vaults"][0]["secrets"][SECRET] = to_store
        azure.save()
        env["AZURE_KEY_VAULT_NAME"] = "kv-abc123"  # azd records the outputs in the environment
        env.update(OUTPUTS)
        self.env_file.write_text(json.dumps(env))
        post = self.hook(None, POSTPROVISION)
        azure.state = json.loads(azure.state_file.read_text())  # what the registry-side deployment did
        return subprocess.CompletedProcess(post.args, post.returncode, done.stdout + post.stdout,
                                           done.stderr + post.stderr)


@pytest.fixture
def azure(tmp_path):
    if shutil.which("sh") is None:
        pytest.fail("sh is needed to run the hook as azd does")
    return Azure(tmp_path)


def test_the_key_generated_on_the_first_provision_survives_every_later_one(azure):
    laptop = azure.machine()

    first = laptop.provision()
    assert first.returncode == 0, first.stderr
    key = azure.vault_key
    Fernet(key.encode())  # a real Fernet key
    assert key not in first.stdout + first.stderr  # never printed

    again = laptop.provision()
    assert again.returncode == 0, again.stderr
    assert laptop.env[TO_STORE] == "" and azure.vault_key == key
    assert "kept, not overwritten" in again.stdout

    # A new machine (or CI, or a recreated .azure folder): the azd environment has no key.
    ci = azure.machine()
    done = ci.provision()
    assert done.returncode == 0, done.stderr
    assert "BASETRIGGER_SECRET_KEY" not in ci.env  # nothing generated
    assert ci.env[TO_STORE] == "" and azure.vault_key == key

    # ... nor does a stale or mistaken key in the environment replace it.
    other = Fernet.generate_key().decode()
    stale = azure.machine(BASETRIGGER_SECRET_KEY=other)  # the vault is found by its tag
    done = stale.provision()
    assert done.returncode == 0, done.stderr
    assert azure.vault_key == key and stale.env[TO_STORE] == ""
    assert "is not written" in done.stdout and other not in done.stdout + done.stderr

    # Only control-plane reads: the hook never asks for a secret's value.
    assert not any(call[:3] == ["keyvault", "secret", "show"] for call in azure.az_calls())


def test_a_key_set_before_the_first_provision_is_the_one_stored(azure):
    mine = f"{Fernet.generate_key().decode()},{Fernet.generate_key().decode()}"
    laptop = azure.machine(BASETRIGGER_SECRET_KEY=mine)

    assert laptop.provision().returncode == 0
    assert azure.vault_key == mine

    wrong = azure.machine(BASETRIGGER_SECRET_KEY="not-a-fernet-key")
    azure.state["vaults"] = []
    azure.save()
    done = wrong.provision()
    assert done.returncode == 1 and "Fernet keys" in done.stderr and "not-a-fernet-key" not in done.stderr


@pytest.mark.parametrize("broken", ["not logged in", "no az"])
def test_the_hook_stops_the_provision_when_it_cannot_tell_whether_the_vault_has_a_key(azure, broken):
    laptop = azure.machine()
    path = None
    if broken == "not logged in":
        azure.state["logged_in"] = False
        azure.save()
    else:
        (azure.bin / "az").unlink()
        path = f"{azure.bin}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin"

    done = laptop.hook(path=path)

    assert done.returncode == 1
    assert "az login" in done.stderr
    assert TO_STORE not in laptop.env and "BASETRIGGER_SECRET_KEY" not in laptop.env


def test_two_environments_of_the_same_name_need_the_resource_group(azure):
    for group in ("rg-a", "rg-b"):
        azure.state["groups"].append(group)
        azure.state["vaults"].append({
            "name": f"kv-{group}", "resourceGroup": group, "tags": {"azd-env-name": "prod"}, "secrets": {},
            "id": vault_id(group, f"kv-{group}"),
        })
    azure.save()

    done = azure.machine(AZURE_RESOURCE_GROUP=None).hook()

    assert done.returncode == 1 and "AZURE_RESOURCE_GROUP" in done.stderr


def deployed(azure) -> dict:
    """The parameters of the last registry-side deployment (infra/registry.bicep)."""
    azure.state = json.loads(azure.state_file.read_text())
    (last, *_) = reversed(azure.state["deployments"])
    assert last["template"].endswith("infra/registry.bicep") and last["group"] == "rg-images"
    return {name: value["value"] for name, value in last["parameters"].items()}


def test_the_registry_s_existing_system_topic_keeps_the_identities_that_still_exist(azure):
    """An environment removed with `azd down` leaves its deleted identity on the shared topic: it is
    dropped, not handed back as kept; identities that exist stay."""
    def identity(name):
        return (f"/subscriptions/{SUB}/resourceGroups/rg-images/providers/"
                f"Microsoft.ManagedIdentity/userAssignedIdentities/{name}")
    other, gone = identity("id-other"), identity("id-deleted-env")
    azure.state["identities"] = [other, APP_IDENTITY]
    azure.state["topics"] = [{
        "name": "contosoacr-events", "resourceGroup": "rg-images",
        "source": REGISTRY_ID.replace("resourceGroups", "resourcegroups"),  # ARM's case varies
        "identity": {"type": "SystemAssigned, UserAssigned",
                     "userAssignedIdentities": {other: {"clientId": "c", "principalId": "p"},
                                                gone: {"clientId": "d", "principalId": "q"},
                                                APP_IDENTITY.upper(): {}}},
    }]
    azure.save()
    laptop = azure.machine()

    done = laptop.provision()

    assert done.returncode == 0, done.stderr
    params = deployed(azure)
    assert params["systemTopicName"] == "contosoacr-events"
    assert params["topicUserAssignedIdentities"] == {other: {}, APP_IDENTITY: {}}
    assert params["keepSystemAssignedIdentity"] is True
    assert params["createSubscription"] is False and params["environmentName"] == "prod"
    assert f"dropping {gone}" in done.stdout

    mistaken = azure.machine(EVENTGRID_SYSTEM_TOPIC="evgt-contosoacr", **OUTPUTS).hook(None, POSTPROVISION)
    assert mistaken.returncode == 1 and "contosoacr-events" in mistaken.stderr


def test_a_registry_without_a_system_topic_gets_a_new_one_with_only_the_app_s_identity(azure):
    laptop = azure.machine()
    assert laptop.provision().returncode == 0
    params = deployed(azure)
    assert params["topicUserAssignedIdentities"] == {APP_IDENTITY: {}}
    assert params["systemTopicName"] == ""  # registry.bicep names it evgt-<registry>
    assert params["keepSystemAssignedIdentity"] is False
    # only the registry-side template went to the registry's group, and with the outputs of main
    assert params["functionAppId"] == OUTPUTS["AZURE_FUNCTION_APP_ID"]
    assert laptop.env["ACR_LOGIN_SERVER"] == "contosoacr.azurecr.io"

    after_deploy = laptop.hook(None, REGISTRY_HOOK, "--with-subscription")
    assert after_deploy.returncode == 0, after_deploy.stderr
    assert deployed(azure)["createSubscription"] is True


def test_the_registry_side_parameters_are_registry_bicep_s(azure):
    from tests.unit.test_infra import INFRA, Bicep

    laptop = azure.machine()
    assert laptop.provision().returncode == 0
    template = Bicep(INFRA / "registry.bicep")
    given = set(deployed(azure))
    assert given <= set(template.params)
    assert {name for name, (_, rest) in template.params.items() if "=" not in rest} <= given


def test_the_app_is_never_deployed_into_the_registry_s_resource_group(azure):
    """`azd down` deletes the app's resource group: with the registry in it, the registry too."""
    for group in ("rg-images", "RG-IMAGES"):
        done = azure.machine(AZURE_RESOURCE_GROUP=group).hook()
        assert done.returncode == 1 and "the registry with it" in done.stderr
    done = azure.machine(ACR_RESOURCE_GROUP=None).hook()
    assert done.returncode == 1 and "azd env set ACR_RESOURCE_GROUP" in done.stderr


def test_the_secret_key_is_not_kept_in_the_azd_environment_after_the_provision(azure):
    """Key Vault is the key of record: the .env file holds the key only during the first provision."""
    laptop = azure.machine()
    done = laptop.provision()
    assert done.returncode == 0, done.stderr
    assert azure.vault_key
    assert laptop.env.get(TO_STORE) == "" and not laptop.env.get("BASETRIGGER_SECRET_KEY")
    assert azure.vault_key not in json.dumps(laptop.env)


def test_the_registry_is_required_first(azure):
    done = azure.machine(ACR_NAME=None).hook()
    assert done.returncode == 1 and "azd env set ACR_NAME" in done.stderr
