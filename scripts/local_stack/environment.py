"""The variables a client of the stack needs: tests, benchmarks, the demo, a developer's shell.

`stack.py env` prints exactly `env_for(...)` as `export K=V` lines; `stack_env()` is the same for
code that imports scripts/stack.py instead of running it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from .azurite import connection_string
from .keys import function_key, secret_key
from .registry import auth_password
from .settings import AUTH_REGISTRY_USER, StackConfig, load_config


def stack_env(
    stack_dir: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """What a test or script needs to use the stack (the `env` command prints exactly this)."""
    return env_for(load_config(stack_dir, env), env)


def env_for(cfg: StackConfig, env: Mapping[str, str] | None = None) -> dict[str, str]:
    env = os.environ if env is None else env
    return {
        "STACK_DIR": str(cfg.stack_dir),
        "AzureWebJobsStorage": connection_string(cfg),
        "BASETRIGGER_REGISTRY_CA": str(cfg.ca_cert),
        "BASETRIGGER_WORK_DIR": env.get("BASETRIGGER_WORK_DIR") or str(cfg.work_dir),
        "BASETRIGGER_URL": cfg.host_url,
        "BASETRIGGER_KEY": function_key(cfg, env) or "",
        "BASETRIGGER_SECRET_KEY": env.get("BASETRIGGER_SECRET_KEY") or secret_key(cfg) or "",
        "REGISTRY": cfg.registry,
        "BASETRIGGER_REGISTRY": cfg.registry,
        "REGISTRY_CERT_DIR": str(cfg.cert_dir),
        # Where the host reads directory contexts in place; tests make theirs in STACK_CONTEXTS.
        "BASETRIGGER_LOCAL_CONTEXT_ROOTS": (env.get("BASETRIGGER_LOCAL_CONTEXT_ROOTS")
                                            or cfg.local_context_roots),
        "STACK_CONTEXTS": str(cfg.contexts_dir),
        # The registries only the poller sees (tests/integration/test_polling.py, bench/poll.py).
        "PUBLIC_REGISTRY": cfg.public_registry,
        "AUTH_REGISTRY": cfg.auth_registry,
        "AUTH_REGISTRY_USER": AUTH_REGISTRY_USER,
        "AUTH_REGISTRY_PASSWORD": auth_password(cfg) or "",
    }
