"""The stack's OCI registry: Debian's docker-registry (CNCF distribution 2.8) serving TLS.

Its config.yml is rewritten on every `up` from the stack's settings: storage in
$STACK_DIR/registry/data, the certificate from the certs module, and a notification endpoint that
POSTs every push to the local host's webhook with the function key in x-functions-key.
"""

from __future__ import annotations

import json
import shutil
import ssl
import urllib.error
from collections.abc import Mapping

from .certs import registry_context
from .net import open_url
from .settings import StackConfig, StackError


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
