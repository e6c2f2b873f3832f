"""The stack's two keys, each made once per STACK_DIR and kept there.

- the function key of the local host (devhost.key): callers send it as x-functions-key, and the
  registry sends it with every notification to the webhook;
- a Fernet key for the app's BASETRIGGER_SECRET_KEY (secret.key, see shared/adapters/secret_box.py).
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Mapping

from .files import write_private
from .settings import StackConfig


def function_key(cfg: StackConfig, env: Mapping[str, str] | None = None, create: bool = False) -> str | None:
    """The local host's function key: DEVHOST_KEY, else $STACK_DIR/devhost.key (made once by `up`).

    `up` writes a key given in DEVHOST_KEY to the file too, so that `env` in another shell (without
    DEVHOST_KEY) prints the key the running host and registry actually use.
    """
    env = os.environ if env is None else env
    given = env.get("DEVHOST_KEY", "").strip()
    stored = cfg.key_file.read_text().strip() if cfg.key_file.exists() else ""
    if not create:
        return given or stored or None
    key = given or stored or secrets.token_urlsafe(32)
    if key != stored:
        cfg.stack_dir.mkdir(parents=True, exist_ok=True)
        write_private(cfg.key_file, key + "\n")
    return key


def secret_key(cfg: StackConfig, create: bool = False) -> str | None:
    """A Fernet key for BASETRIGGER_SECRET_KEY (shared/adapters/secret_box.py), made once per stack dir.

    A Fernet key is 32 random bytes, url-safe base64; made with the stdlib so this script needs
    no `cryptography`.
    """
    if cfg.secret_key_file.exists():
        return cfg.secret_key_file.read_text().strip()
    if not create:
        return None
    key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    write_private(cfg.secret_key_file, key + "\n")
    return key
