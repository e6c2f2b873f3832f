"""The local Functions host: `python -m devhost --port HOST_PORT`, run from the project root.

Azure Functions Core Tools cannot run on the project's machines (see docs/local-stack.md), so
devhost serves function_app.py in its place. The stack skips the host while devhost/ does not
exist, gives it an environment tied to this stack, and notices when its code changed under it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from .azurite import connection_string
from .keys import function_key, secret_key
from .net import open_url
from .processes import process_start_time
from .settings import PROJECT, StackConfig

# What the host loads. If any of it changed after the host started, the host serves old code.
HOST_CODE = (
    "function_app.py",
    "host.json",
    "local.settings.json",
    "local.settings.example.json",
    "functions",
    "shared",
    "devhost",
)


def host_command(cfg: StackConfig) -> list[str]:
    return [sys.executable, "-m", "devhost", "--port", str(cfg.host_port)]


def host_identity(cfg: StackConfig) -> list[str]:
    """Arguments every host_command has (the stack dir marker in its environment tells stacks apart)."""
    return ["-m", "devhost"]


def host_ports(cfg: StackConfig) -> list[int]:
    return [cfg.host_port]


def host_available() -> bool:
    return (PROJECT / "devhost" / "__main__.py").exists()


def example_settings() -> dict[str, str]:
    """`Values` of local.settings.example.json (the local defaults of every app setting)."""
    try:
        values = json.loads((PROJECT / "local.settings.example.json").read_text()).get("Values", {})
    except (OSError, ValueError):
        return {}
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in values.items() if v is not None}


def host_environment(cfg: StackConfig, key: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment the local Functions host runs with.

    Everything already in the environment passes through (so BASETRIGGER_* settings given by the
    caller reach the app); the values that tie the host to *this* stack are forced, since a stale
    AzureWebJobsStorage from another shell would point it at the wrong emulator.
    """
    env = dict(os.environ if base is None else base)
    env.setdefault("BASETRIGGER_WORK_DIR", str(cfg.work_dir))
    env.setdefault("BASETRIGGER_SECRET_KEY", secret_key(cfg, create=True) or "")
    # Directory contexts read in place (StackConfig.local_context_roots); any other folder is sent
    # as an archive.
    env.setdefault("BASETRIGGER_LOCAL_CONTEXT_ROOTS", cfg.local_context_roots)
    # App settings the bindings need (%BASETRIGGER_BUILD_QUEUE% ...). With a local.settings.json,
    # devhost reads it itself (environment first, as Core Tools does); without one (a fresh clone,
    # CI) the example's values stand in, as if it had been copied.
    if not (PROJECT / "local.settings.json").exists():
        for name, value in example_settings().items():
            if value:  # "" means "not set" in the example
                env.setdefault(name, value)
    env.update(
        {
            "AzureWebJobsStorage": connection_string(cfg),
            "BASETRIGGER_REGISTRY_CA": str(cfg.ca_cert),
            "DEVHOST_KEY": key,
            "REGISTRY": cfg.registry,
            # Task images without a registry host (`helloworld:{{.Run.ID}}`) go to this registry.
            "BASETRIGGER_REGISTRY": cfg.registry,
            "REGISTRY_CERT_DIR": str(cfg.cert_dir),
            "PYTHONUNBUFFERED": "1",  # so logs/host.log is current while it runs
        }
    )
    return env


def host_status(cfg: StackConfig) -> dict[str, Any] | None:
    """The host's GET /admin/host/status (as under Core Tools), or None while it does not answer.

    Any HTTP answer means the host is up; {} when it answered without a JSON status.
    """
    try:
        request = urllib.request.Request(cfg.host_url + "/admin/host/status",
                                         headers={"x-functions-key": function_key(cfg) or ""})
        with open_url(request) as resp:
            body = resp.read()
    except urllib.error.HTTPError:
        return {}
    except (OSError, urllib.error.URLError):
        return None
    try:
        doc = json.loads(body)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def host_ready(cfg: StackConfig) -> bool:
    return host_status(cfg) is not None


def host_code_changed(pid: int) -> str | None:
    """A file of the host's code newer than the running host (relative path), or None."""
    started = process_start_time(pid)
    if started is None:
        return None
    for name in HOST_CODE:
        path = PROJECT / name
        files = [path] if path.is_file() else (path.rglob("*.py") if path.is_dir() else [])
        for f in files:
            with contextlib.suppress(OSError):
                # 1 s of slack: /proc's start time has clock-tick resolution, mtimes are exact.
                if f.stat().st_mtime > started + 1:
                    return str(f.relative_to(PROJECT))
    return None
