"""Build contexts: a local directory, an uploaded archive, or a git repository at a branch.

Git contexts are shallow clones. A git access token is handed to git through an HTTP header in the
environment of the clone only (never in the URL, argv, logs or records).
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

GIT_SCHEMES = ("https://", "http://", "git@", "ssh://", "git://", "file://")


class ContextError(ValueError):
    """The context cannot be read: a missing directory, a failed clone, a bad archive."""


def is_git_url(context: str) -> bool:
    return context.startswith(GIT_SCHEMES)


def clone(url: str, branch: str | None, token: str | None, dest: Path) -> Path:
    """Shallow-clone `url` at `branch` into dest."""
    argv = ["git", "clone", "--quiet", "--depth", "1", "--single-branch"]
    if branch:
        argv += ["--branch", branch]
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0")
    if token:
        # git reads extra config from the environment; the header never reaches argv or a file.
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        env.update(GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="http.extraHeader",
                   GIT_CONFIG_VALUE_0=f"Authorization: Basic {basic}")
    result = subprocess.run(argv + [url, str(dest)], env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        message = result.stderr.strip().splitlines()[-1:] or ["git clone failed"]
        text = message[0].replace(token, "***") if token else message[0]
        raise ContextError(f"cannot clone {url} ({branch or 'default branch'}): {text}")
    return dest


def extract_archive(archive: Path, dest: Path) -> Path:
    """Unpack an uploaded tar(.gz) context, refusing members that would escape dest."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise ContextError(f"the uploaded context is not a readable tar archive: {exc}") from exc
    return dest


def local_dir(path: str) -> Path:
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise ContextError(f"context directory {path!r} does not exist")
    return directory.resolve()


def read_dockerfile(context_dir: Path, dockerfile: str) -> str:
    path = (context_dir / dockerfile).resolve()
    if not path.is_relative_to(context_dir.resolve()):
        raise ContextError(f"the Dockerfile path {dockerfile!r} leaves the context")
    if not path.is_file():
        raise ContextError(f"no Dockerfile {dockerfile!r} in the context")
    return path.read_text(encoding="utf-8", errors="replace")


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
