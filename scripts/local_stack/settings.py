"""Settings of one local stack: its state folder (STACK_DIR), ports, folder layout and stack.json.

A setting comes from an explicit argument (the command line's flags), then the environment, then
what the last `up` of the same STACK_DIR recorded in stack.json, then the defaults below. Reading
stack.json back is what lets `env` or `down` in another shell find a stack started on other ports.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .files import write_if_changed

# scripts/local_stack/settings.py -> the project root.
PROJECT = Path(__file__).resolve().parents[2]

# Azurite's well-known development account. The key is public (documented by Microsoft) and only
# valid against the emulator; shared/config.py refuses key-based connection strings for anything else.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

# env var -> default; the same names are the flags (--azurite-blob-port, ...).
PORT_DEFAULTS = {
    "AZURITE_BLOB_PORT": 10000,
    "AZURITE_QUEUE_PORT": 10001,
    "AZURITE_TABLE_PORT": 10002,
    "REGISTRY_PORT": 5000,
    "HOST_PORT": 7071,
    # Registries only polling sees: one without notifications (a "public" registry), one that
    # needs basic credentials (htpasswd) over TLS.
    "PUBLIC_REGISTRY_PORT": 5001,
    "AUTH_REGISTRY_PORT": 5002,
}
# The user the authenticated registry knows (its password is made on the first `up`).
AUTH_REGISTRY_USER = "basetrigger"

# Where the Functions host's webhook lives (functions/webhooks_distribution.py, route hooks/distribution).
WEBHOOK_PATH = "/api/hooks/distribution"


class StackError(RuntimeError):
    """Something the user has to act on; printed without a traceback."""


@dataclass(frozen=True)
class StackConfig:
    stack_dir: Path
    blob_port: int = PORT_DEFAULTS["AZURITE_BLOB_PORT"]
    queue_port: int = PORT_DEFAULTS["AZURITE_QUEUE_PORT"]
    table_port: int = PORT_DEFAULTS["AZURITE_TABLE_PORT"]
    registry_port: int = PORT_DEFAULTS["REGISTRY_PORT"]
    host_port: int = PORT_DEFAULTS["HOST_PORT"]
    public_registry_port: int = PORT_DEFAULTS["PUBLIC_REGISTRY_PORT"]
    auth_registry_port: int = PORT_DEFAULTS["AUTH_REGISTRY_PORT"]

    # Layout of STACK_DIR ------------------------------------------------------------------------
    @property
    def logs_dir(self) -> Path:
        return self.stack_dir / "logs"

    @property
    def pids_dir(self) -> Path:
        return self.stack_dir / "pids"

    @property
    def azurite_dir(self) -> Path:
        return self.stack_dir / "azurite"

    @property
    def registry_dir(self) -> Path:
        return self.stack_dir / "registry"

    @property
    def registry_config(self) -> Path:
        return self.registry_dir / "config.yml"

    # The two registries only the poller watches: their own storage and config, the same CA.
    @property
    def public_registry_dir(self) -> Path:
        return self.stack_dir / "public-registry"

    @property
    def auth_registry_dir(self) -> Path:
        return self.stack_dir / "auth-registry"

    @property
    def htpasswd_file(self) -> Path:
        return self.auth_registry_dir / "htpasswd"

    @property
    def auth_password_file(self) -> Path:
        return self.auth_registry_dir / "password"

    @property
    def public_registry(self) -> str:
        return f"localhost:{self.public_registry_port}"

    @property
    def auth_registry(self) -> str:
        return f"localhost:{self.auth_registry_port}"

    @property
    def ca_cert(self) -> Path:
        return self.registry_dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.registry_dir / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.registry_dir / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.registry_dir / "server.key"

    @property
    def registry(self) -> str:
        """The registry as image references name it."""
        return f"localhost:{self.registry_port}"

    @property
    def cert_dir(self) -> Path:
        """The folder to give buildah/skopeo as --cert-dir (holds ca.crt)."""
        return self.registry_dir / "certs.d" / self.registry

    @property
    def work_dir(self) -> Path:
        return self.stack_dir / "work"

    @property
    def contexts_dir(self) -> Path:
        """Where tests and scripts put directory contexts the host reads in place (a root of its own:
        nothing beside it in STACK_DIR, the keys included, is under it)."""
        return self.stack_dir / "contexts"

    @property
    def local_context_roots(self) -> str:
        """BASETRIGGER_LOCAL_CONTEXT_ROOTS of the host: the checkout's examples and contexts_dir. Not
        the whole checkout, which holds .git and, by default, STACK_DIR with its keys."""
        return os.pathsep.join([str(PROJECT / "examples"), str(self.contexts_dir)])

    @property
    def key_file(self) -> Path:
        return self.stack_dir / "devhost.key"

    @property
    def secret_key_file(self) -> Path:
        return self.stack_dir / "secret.key"

    @property
    def state_file(self) -> Path:
        return self.stack_dir / "stack.json"

    # Endpoints ------------------------------------------------------------------------------------
    def azurite_url(self, service: str) -> str:
        port = {"blob": self.blob_port, "queue": self.queue_port, "table": self.table_port}[service]
        return f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"

    @property
    def host_url(self) -> str:
        return f"http://127.0.0.1:{self.host_port}"

    @property
    def webhook_url(self) -> str:
        return self.host_url + WEBHOOK_PATH

    def ports(self) -> dict[str, int]:
        return {
            "AZURITE_BLOB_PORT": self.blob_port,
            "AZURITE_QUEUE_PORT": self.queue_port,
            "AZURITE_TABLE_PORT": self.table_port,
            "REGISTRY_PORT": self.registry_port,
            "HOST_PORT": self.host_port,
            "PUBLIC_REGISTRY_PORT": self.public_registry_port,
            "AUTH_REGISTRY_PORT": self.auth_registry_port,
        }


_FIELD_OF = {
    "AZURITE_BLOB_PORT": "blob_port",
    "AZURITE_QUEUE_PORT": "queue_port",
    "AZURITE_TABLE_PORT": "table_port",
    "REGISTRY_PORT": "registry_port",
    "HOST_PORT": "host_port",
    "PUBLIC_REGISTRY_PORT": "public_registry_port",
    "AUTH_REGISTRY_PORT": "auth_registry_port",
}


def default_stack_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    raw = env.get("STACK_DIR") or str(PROJECT / ".stack")
    # Absolute on purpose: the path goes into the registry config and into pid identity checks.
    return Path(raw).expanduser().resolve()


def load_config(
    stack_dir: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    **ports: int | None,
) -> StackConfig:
    """Settings for one stack: explicit arguments, then env, then the stack's stack.json, then defaults.

    `ports` takes the env var names in lower case (azurite_blob_port=..., host_port=...).
    """
    env = os.environ if env is None else env
    sdir = Path(stack_dir).expanduser().resolve() if stack_dir else default_stack_dir(env)
    recorded: dict[str, int] = {}
    with contextlib.suppress(OSError, ValueError):
        recorded = json.loads((sdir / "stack.json").read_text()).get("ports", {})
    values: dict[str, int] = {}
    for name, default in PORT_DEFAULTS.items():
        explicit = ports.get(name.lower())
        raw: object = explicit if explicit is not None else env.get(name) or recorded.get(name, default)
        try:
            port = int(str(raw))
        except ValueError:
            raise StackError(f"{name} must be a port number, not {raw!r}") from None
        if not 0 < port < 65536:
            raise StackError(f"{name} must be a port number, not {port}")
        values[_FIELD_OF[name]] = port
    cfg = StackConfig(stack_dir=sdir, **values)
    if len(set(cfg.ports().values())) != len(PORT_DEFAULTS):
        raise StackError(f"the stack's ports must all differ: {cfg.ports()}")
    return cfg


def read_state(cfg: StackConfig) -> dict[str, Any]:
    """stack.json: the ports of the last `up` and the system-wide CA files it wrote ({} if none)."""
    try:
        state = json.loads(cfg.state_file.read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def write_state(cfg: StackConfig, state: dict[str, Any]) -> None:
    write_if_changed(cfg.state_file, json.dumps(state, indent=2) + "\n")
