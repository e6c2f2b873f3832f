"""File writes for STACK_DIR: owner-only, and atomic only-if-changed.

Several of the stack's files carry secrets (the function key, the Fernet key, the registry config
with the key in its notification header), so everything written here is readable by its owner only.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def write_if_changed(path: Path, text: str) -> bool:
    """Write atomically; return whether the content changed."""
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    # Owner-only: some of these files carry the function key (the registry's notification header).
    tmp.chmod(0o600)
    tmp.replace(path)
    return True
