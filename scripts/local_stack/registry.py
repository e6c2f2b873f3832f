"""The stack's OCI registry: Debian's docker-registry (CNCF distribution 2.8) serving TLS.

Its config.yml is rewritten on every `up` from the stack's settings: storage in
$STACK_DIR/registry/data, the certificate from the certs module, and a notification endpoint that
POSTs every push to the local host's webhook with the function key in x-functions-key.
"""

from __future__ import annotations

import json
import secrets
import shutil
import ssl
import subprocess
import urllib.error
from collections.abc import Mapping
from pathlib import Path

from .certs import registry_context
from .files import write_private
from .net import open_url
from .settings import AUTH_REGISTRY_USER, StackConfig, StackError


def registry_command(cfg: StackConfig) -> list[str]:
    binary = shutil.which("docker-registry") or shutil.which("registry")
    if binary is None:
        raise StackError("docker-registry is not installed; run scripts/install.sh (or `make install`)")
    return [binary, "serve", str(cfg.registry_config)]


def registry_identity(cfg: StackConfig) -> list[str]:
    """Arguments of registry_command that only this stack's registry has."""
    return ["serve", str(cfg.registry_config)]


def registry_ports(cfg: StackConfig) -> list[int]:
    return [cfg.registry_port]


def registry_environment(base: Mapping[str, str]) -> dict[str, str]:
    """`base` without the variables docker-registry would mistake for configuration."""
    # docker-registry reads REGISTRY_<SECTION>_<KEY> variables as overrides of config.yml; ours
    # (REGISTRY_PORT, REGISTRY_CERT_DIR from `env`) must not be taken for such.
    return {k: v for k, v in base.items() if not k.startswith("REGISTRY_")}


def registry_config_text(cfg: StackConfig, key: str) -> str:
    """config.yml for docker-registry (distribution 2.8). Strings are JSON-quoted, which YAML reads."""
    q = json.dumps
    return f"""\
# Written by scripts/stack.py on every `up`; edits are overwritten.
version: 0.1
log:
  # info would log every notification with its headers, the function key among them.
  level: warn
  fields:
    service: registry
storage:
  filesystem:
    rootdirectory: {q(str(cfg.registry_dir / "data"))}
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: {q(f"127.0.0.1:{cfg.registry_port}")}
  tls:
    certificate: {q(str(cfg.server_cert))}
    key: {q(str(cfg.server_key))}
  headers:
    X-Content-Type-Options: [nosniff]
notifications:
  events:
    includereferences: true
  endpoints:
    - name: basetrigger
      url: {q(cfg.webhook_url)}
      headers:
        x-functions-key: [{q(key)}]
      timeout: 5s
      threshold: 5
      backoff: 1s
      # Pulls are noise for the webhook. Note: distribution 2.8 (Debian's) parses ignore.actions
      # but does not apply it (only 3.x wires it through), so pull events still arrive and the
      # webhook must skip them itself; the setting takes effect on a newer registry.
      ignore:
        actions: [pull]
"""


def registry_ready(cfg: StackConfig) -> bool:
    try:
        with open_url(f"https://{cfg.registry}/v2/", registry_context(cfg)) as resp:
            return resp.status == 200
    except (OSError, ssl.SSLError, urllib.error.URLError):
        return False


# --------------------------------------------------------------------------------------------------
# The registries only the poller sees: `public-registry` (no notifications: a registry that sends
# nothing, like Docker Hub or quay.io) and `auth-registry` (htpasswd basic auth over TLS: a private
# registry the tasks sign in to with `task credential add`). Same binary, same CA, own storage.
# --------------------------------------------------------------------------------------------------

EXTRA_REGISTRIES = ("public-registry", "auth-registry")


def _extra(cfg: StackConfig, part: str) -> tuple[Path, int]:
    if part == "public-registry":
        return cfg.public_registry_dir, cfg.public_registry_port
    return cfg.auth_registry_dir, cfg.auth_registry_port


def extra_config_path(cfg: StackConfig, part: str) -> Path:
    return _extra(cfg, part)[0] / "config.yml"


def extra_command(cfg: StackConfig, part: str) -> list[str]:
    return registry_command(cfg)[:2] + [str(extra_config_path(cfg, part))]


def extra_identity(cfg: StackConfig, part: str) -> list[str]:
    return ["serve", str(extra_config_path(cfg, part))]


def extra_ports(cfg: StackConfig, part: str) -> list[int]:
    return [_extra(cfg, part)[1]]


def auth_password(cfg: StackConfig, create: bool = False) -> str | None:
    """The authenticated registry's password for AUTH_REGISTRY_USER, made once per stack dir."""
    if cfg.auth_password_file.exists():
        return cfg.auth_password_file.read_text().strip() or None
    if not create:
        return None
    password = secrets.token_urlsafe(18)
    write_private(cfg.auth_password_file, password + "\n")
    return password


def ensure_htpasswd(cfg: StackConfig) -> None:
    """The htpasswd file (bcrypt, which distribution requires) for the stack's user and password."""
    password = auth_password(cfg, create=True)
    assert password
    made_after = cfg.htpasswd_file.exists() and \
        cfg.htpasswd_file.stat().st_mtime >= cfg.auth_password_file.stat().st_mtime
    if made_after:
        return
    htpasswd = shutil.which("htpasswd")
    if htpasswd is None:
        raise StackError("htpasswd is not installed (Debian apache2-utils); run scripts/install.sh")
    # -i: the password comes on stdin, never on a command line.
    result = subprocess.run([htpasswd, "-niB", AUTH_REGISTRY_USER], input=password + "\n",
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise StackError(f"htpasswd failed: {result.stderr.strip()}")
    write_private(cfg.htpasswd_file, result.stdout.strip() + "\n")


def extra_config_text(cfg: StackConfig, part: str) -> str:
    q = json.dumps
    folder, port = _extra(cfg, part)
    auth = ""
    if part == "auth-registry":
        auth = f"""auth:
  htpasswd:
    realm: basetrigger-local
    path: {q(str(cfg.htpasswd_file))}
"""
    return f"""\
# Written by scripts/stack.py on every `up`; edits are overwritten.
# No notifications: only the poller sees what is pushed here.
version: 0.1
log:
  level: warn
  fields:
    service: {part}
storage:
  filesystem:
    rootdirectory: {q(str(folder / "data"))}
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: {q(f"127.0.0.1:{port}")}
  tls:
    certificate: {q(str(cfg.server_cert))}
    key: {q(str(cfg.server_key))}
  headers:
    X-Content-Type-Options: [nosniff]
{auth}"""


def extra_ready(cfg: StackConfig, part: str) -> bool:
    """The registry answers /v2/ (401 from the authenticated one is an answer too)."""
    port = _extra(cfg, part)[1]
    try:
        with open_url(f"https://localhost:{port}/v2/", registry_context(cfg)) as resp:
            return resp.status == 200
    except urllib.error.HTTPError as exc:
        return exc.code == 401
    except (OSError, ssl.SSLError, urllib.error.URLError):
        return False
