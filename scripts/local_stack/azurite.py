"""Azurite, the Azure Storage emulator (blob, queue, table), as the stack runs it.

Installed from npm by scripts/install.sh into <project>/.stack/node; every service is bound to
127.0.0.1 on the stack's three ports and keeps its data in $STACK_DIR/azurite.
"""

from __future__ import annotations

import os
import shutil

from .net import port_open
from .settings import AZURITE_ACCOUNT, AZURITE_ACCOUNT_KEY, PROJECT, StackConfig, StackError


def connection_string(cfg: StackConfig) -> str:
    """A full Azurite connection string with explicit endpoints (works for non-default ports)."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_ACCOUNT_KEY};"
        f"BlobEndpoint={cfg.azurite_url('blob')};"
        f"QueueEndpoint={cfg.azurite_url('queue')};"
        f"TableEndpoint={cfg.azurite_url('table')};"
    )


def azurite_command(cfg: StackConfig) -> list[str]:
    candidates = [
        os.environ.get("AZURITE_BIN", ""),
        str(PROJECT / ".stack/node/node_modules/.bin/azurite"),  # where scripts/install.sh puts it
        str(cfg.stack_dir / "node/node_modules/.bin/azurite"),
        shutil.which("azurite") or "",
    ]
    binary = next((c for c in candidates if c and os.access(c, os.X_OK)), None)
    if binary is None:
        raise StackError("azurite is not installed; run scripts/install.sh (or `make install`)")
    # Every service bound to 127.0.0.1 only: nothing here is for other machines.
    return [
        binary, "--silent", "--location", str(cfg.azurite_dir),
        "--skipApiVersionCheck", "--loose", "--disableTelemetry",
        "--blobHost", "127.0.0.1", "--blobPort", str(cfg.blob_port),
        "--queueHost", "127.0.0.1", "--queuePort", str(cfg.queue_port),
        "--tableHost", "127.0.0.1", "--tablePort", str(cfg.table_port),
    ]  # fmt: skip


def azurite_identity(cfg: StackConfig) -> list[str]:
    """Arguments of azurite_command that only this stack's Azurite has."""
    return ["--location", str(cfg.azurite_dir)]


def azurite_ports(cfg: StackConfig) -> list[int]:
    return [cfg.blob_port, cfg.queue_port, cfg.table_port]


def azurite_ready(cfg: StackConfig) -> bool:
    return all(port_open(p) for p in azurite_ports(cfg))
