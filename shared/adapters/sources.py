"""Build sources on the machine that builds: local directories (under the configured roots only),
shallow git clones, and uploaded archives kept in blob storage.

A git access token is handed to git through an HTTP header in the environment of the clone only
(never in the URL, argv, logs or records).
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import subprocess
import tarfile
from pathlib import Path

from azure.core.exceptions import ResourceNotFoundError

from shared.adapters.storage import Storage
from shared.domain.builds import (
    BuildSpec,
    ContextError,
    LocalContextRoots,
    UnpackLimits,
    UploadGone,
    unpack_filter,
)

UPLOADS = "build-contexts"


def clone(url: str, branch: str | None, token: str | None, dest: Path, commit: str | None = None) -> Path:
    """Shallow-clone `url` at `branch` into dest, then check out `commit` if one is given and it is
    not the branch's tip (fetched alone: git servers serve a commit of a branch by its id)."""
    argv = ["git", "clone", "--quiet", "--depth", "1", "--single-branch"]
    if branch:
        argv += ["--branch", branch]
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0")
    if token:
        # git reads extra config from the environment; the header never reaches argv or a file.
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        env.update(GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="http.extraHeader",
                   GIT_CONFIG_VALUE_0=f"Authorization: Basic {basic}")
    try:
        result = subprocess.run(argv + [url, str(dest)], env=env, capture_output=True, text=True,
                                timeout=600)
    except subprocess.TimeoutExpired as exc:
        raise ContextError(f"cannot clone {url}: no answer within {exc.timeout:.0f} s") from exc
    except (OSError, ValueError) as exc:  # git missing; a NUL byte in the URL or branch
        raise ContextError(f"cannot clone {url!r}: {exc.__class__.__name__}") from exc
    if result.returncode != 0:
        message = result.stderr.strip().splitlines()[-1:] or ["git clone failed"]
        text = message[0].replace(token, "***") if token else message[0]
        raise ContextError(f"cannot clone {url} ({branch or 'default branch'}): {text}")
    if commit:
        _check_out(dest, commit, env, token)
    return dest


def _check_out(repo: Path, commit: str, env: dict[str, str], token: str | None) -> None:
    if not re.fullmatch(r"[0-9a-f]{7,64}", commit):
        raise ContextError(f"{commit[:80]!r} is not a commit id")
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.stdout.strip() == commit:
        return
    for argv in (["fetch", "--quiet", "--depth", "1", "origin", commit],
                 ["checkout", "--quiet", "--detach", "FETCH_HEAD"]):
        result = subprocess.run(["git", "-C", str(repo), *argv], env=env, capture_output=True, text=True,
                                timeout=600)
        if result.returncode != 0:
            message = (result.stderr.strip().splitlines()[-1:] or ["git failed"])[0]
            text = message.replace(token, "***") if token else message
            raise ContextError(f"cannot check out commit {commit}: {text}")


def extract_archive(archive: Path, dest: Path, limits: UnpackLimits) -> Path:
    """Unpack an uploaded tar(.gz) context, refusing members that would escape dest, and stopping
    at the first member that goes over `limits`."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter=unpack_filter(limits))
    except ContextError:
        raise  # over the limits
    except (tarfile.TarError, OSError, EOFError, KeyError, RecursionError, ValueError) as exc:
        # tarfile's own link handling: KeyError for a hard link to a member the archive does not
        # hold, RecursionError for a symlink that names itself over a directory (`a/`, `a -> a`);
        # ValueError for a member name with a NUL byte in it (a PAX `path` record).
        raise ContextError(f"the uploaded context is not a readable tar archive: {exc}") from exc
    return dest


class BuildSources:
    def __init__(self, storage: Storage, limits: UnpackLimits, local_roots: LocalContextRoots):
        self.storage = storage
        self.limits = limits
        # Checked at each run too: a task saved before a root was removed must not read it.
        self.local_roots = local_roots

    def upload(self, name: str, archive: bytes) -> None:
        self.storage.container(UPLOADS).upload_blob(name, archive, overwrite=True)

    def remove(self, name: str) -> None:
        with contextlib.suppress(ResourceNotFoundError):  # deleted before: a retried request
            self.storage.container(UPLOADS).delete_blob(name)

    def checkout(self, spec: BuildSpec, workspace: Path) -> Path:
        source = spec.source
        if source.git_url:
            return clone(source.git_url, source.branch, spec.git_token, workspace / "context", source.commit)
        if source.directory:
            return self.local_roots.directory(source.directory)
        if source.upload:
            archive = workspace / "context.tar.gz"
            blob = self.storage.container(UPLOADS).get_blob_client(source.upload)
            try:
                with archive.open("wb") as handle:
                    blob.download_blob().readinto(handle)
            except ResourceNotFoundError as exc:
                raise UploadGone(f"the upload {source.upload} is not in storage") from exc
            return extract_archive(archive, workspace / "context", self.limits)
        raise ContextError("the build has no source")
