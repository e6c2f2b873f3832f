"""Registry credentials for buildah: a containers-auth.json file that lives only while a build runs.

buildah reads credentials from `--authfile` (the containers-auth.json format), so no password is on
a command line (`--creds` would show it in `ps` and in the argv the log never prints anyway). The
file is written owner-only into a fresh temporary folder and removed with it when the build ends.
Managed-identity credentials name no password: the ACR builder signs in with the identity itself.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from shared.domain.credentials import RegistryCredential


@contextmanager
def auth_file_args(credentials: Sequence[RegistryCredential], work_dir: Path) -> Iterator[list[str]]:
    """`["--authfile", path]` for the credentials that have a password, [] when none do."""
    auths = {c.login_server: {"auth": base64.b64encode(f"{c.username}:{c.password}".encode()).decode()}
             for c in credentials if c.username and c.password}
    if not auths:
        yield []
        return
    work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="auth-") as folder:
        path = Path(folder) / "auth.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump({"auths": auths}, out)
        yield ["--authfile", str(path)]
