"""What a run builds: its sources and settings (`BuildSpec`), and the builder's request and result.

A `BuildSpec` is resolved once per run: from the task when the run starts (task runs), or from the
upload when the run is created (quick builds, where it is stored on the run without secrets).
"""

from __future__ import annotations

import io
import os
import tarfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from shared.domain.credentials import RegistryCredential
from shared.domain.vocabulary import RunStatus

GIT_SCHEMES = ("https://", "http://", "git@", "ssh://", "git://", "file://")


class ContextError(ValueError):
    """The sources cannot be had: a missing directory, a failed clone, a bad archive."""


class UploadGone(LookupError):
    """An uploaded archive a build names is not in storage (any more). Not a ContextError: for a
    task run it means the task was changed after the run read it (its old upload was deleted)."""


class ContextTooLarge(ContextError):
    """An uploaded context would unpack beyond the configured limits."""


@dataclass(frozen=True)
class UnpackLimits:
    """How far an uploaded context may unpack: a small archive of zeros must not fill the disk."""

    max_bytes: int = 512 * 1024 * 1024
    max_files: int = 50_000


class UnpackBudget:
    """Counts what an archive unpacks, member by member, and stops at the first that goes over."""

    def __init__(self, limits: UnpackLimits):
        self.limits = limits
        self.bytes = 0
        self.files = 0

    def take(self, size: int) -> None:
        self.files += 1
        self.bytes += max(size, 0)
        if self.files > self.limits.max_files:
            raise ContextTooLarge(f"the context holds more than {self.limits.max_files} files")
        if self.bytes > self.limits.max_bytes:
            raise ContextTooLarge(
                f"the context unpacks to more than {self.limits.max_bytes // (1024 * 1024)} MiB")


def unpack_filter(limits: UnpackLimits) -> Callable[[tarfile.TarInfo, str], tarfile.TarInfo]:
    """What may be unpacked from an uploaded context, member by member: tarfile's `data` filter
    (no absolute names, no `..` out, no links pointing out, no devices), within `limits`. The one
    definition both the check before a run (check_archive) and the unpacking for a build use."""
    budget = UnpackBudget(limits)

    def accept(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
        budget.take(member.size)
        if not member.isdir() and member.name.endswith("/"):
            # A link named `dir/` is made at `dir`, but tarfile before 3.11.13 (CVE-2025-4138)
            # judged where it points from inside `dir`: `dir/ -> ../outside` passed its filter.
            member = member.replace(name=member.name.rstrip("/"), deep=False)
        return tarfile.data_filter(member, dest)

    return accept


# Where check_archive pretends to unpack: only names are compared, nothing is written.
_CHECK_DEST = "/nonexistent/context"


def check_archive(archive: bytes, limits: UnpackLimits) -> None:
    """ContextError unless `archive` is a tar(.gz) that unpack_filter takes whole. Only the member
    headers are read (each declares its size), so a bomb is refused before it is decompressed."""
    accept = unpack_filter(limits)
    seen: set[str] = set()
    try:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            for member in tar:
                accepted = accept(member, _CHECK_DEST)
                if accepted.islnk() and os.path.normpath(accepted.linkname) not in seen:
                    # Unpacking looks a hard link's target up among the members before it.
                    raise ContextError(f"the context archive's hard link {member.name[:200]!r} names "
                                       "no earlier member")
                seen.add(os.path.normpath(accepted.name))
    except ContextError:
        raise  # over the limits, or a hard link to nothing
    except tarfile.FilterError as exc:
        raise ContextError(f"the context archive holds a member that would land outside the context "
                           f"or is no plain file: {exc}") from exc
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        # ValueError: a member name with a NUL byte in it (a PAX `path` record).
        raise ContextError(f"the context is not a readable tar archive: {exc}") from exc


LOCAL_CONTEXT_ROOTS_SETTING = "BASETRIGGER_LOCAL_CONTEXT_ROOTS"


class ContextNotReadInPlace(ContextError):
    """A directory context this builder does not read where it is: the client sends its archive."""


@dataclass(frozen=True)
class LocalContextRoots:
    """The folders under which a directory context is read in place, on the machine that builds.

    A directory context names a path on the builder: without this fence a caller could build (or
    have the Dockerfile parser quote) any file the app can read, its own keys included. None by
    default; the local stack names its examples. Paths are compared once resolved (symlinks and
    `..` followed), so neither a link inside a root nor `root/../etc` gets out.
    """

    roots: tuple[Path, ...] = ()

    @classmethod
    def parse(cls, text: str) -> LocalContextRoots:
        """Absolute folders separated by os.pathsep or commas; resolved now, so a link swapped in
        later does not move a root."""
        parts = [p.strip() for p in text.replace(",", os.pathsep).split(os.pathsep)]
        roots = []
        for part in filter(None, parts):
            root = Path(part)
            if not root.is_absolute():
                raise ValueError(f"{LOCAL_CONTEXT_ROOTS_SETTING}: {part!r} is not an absolute path")
            roots.append(root.resolve())
        return cls(tuple(roots))

    def directory(self, path: str) -> Path:
        """The resolved folder `path` names; ContextNotReadInPlace unless it is under a root."""
        try:  # `~nobody/x` (RuntimeError), a name too long (OSError), a NUL byte (ValueError)
            resolved = Path(path).expanduser().resolve()
            inside = any(resolved.is_relative_to(root) for root in self.roots)
            # Outside the roots nothing is looked at, so no answer tells what exists there.
            if inside and resolved.is_dir():
                return resolved
        except (OSError, RuntimeError, ValueError):
            pass
        raise ContextNotReadInPlace(
            f"the builder does not read the directory {path[:200]!r} in place: send its content as "
            "context_archive, a base64 .tar.gz (`basetrigger task create/update --context DIR` does "
            f"that by itself), give a git URL, or, on the machine that builds, add the folder to "
            f"{LOCAL_CONTEXT_ROOTS_SETTING}")


def is_git_url(context: str) -> bool:
    return context.startswith(GIT_SCHEMES)


def read_dockerfile(context_dir: Path, dockerfile: str) -> str:
    """The Dockerfile's text; ContextError when it is missing or its path leaves the context."""
    try:  # a NUL byte, a name too long or a lone surrogate is the caller's mistake, not a crash
        path = (context_dir / dockerfile).resolve()
        if not path.is_relative_to(context_dir.resolve()):
            raise ContextError(f"the Dockerfile path {dockerfile[:200]!r} leaves the context")
        if not path.is_file():
            raise ContextError(f"no Dockerfile {dockerfile[:200]!r} in the context")
        return path.read_text(encoding="utf-8", errors="replace")
    except ContextError:
        raise
    except (OSError, ValueError) as exc:
        raise ContextError(f"cannot read the Dockerfile {dockerfile[:200]!r}: "
                           f"{exc.__class__.__name__}") from exc


@dataclass(frozen=True)
class Source:
    """Where a build's files come from: exactly one of a directory on the builder, a git repository
    (at a branch), or an uploaded tar.gz kept in blob storage."""

    directory: str | None = None
    git_url: str | None = None
    branch: str | None = None
    upload: str | None = None
    # A git repository's commit to build (a run a source trigger started): the branch's tip
    # otherwise. The branch is still cloned first: a commit is fetched from it.
    commit: str | None = None

    @classmethod
    def of_context(cls, context: str, branch: str | None, commit: str | None = None) -> Source:
        """A task's `context` as the user gave it: a git URL or a directory."""
        if is_git_url(context):
            return cls(git_url=context, branch=branch, commit=commit)
        return cls(directory=context)

    def describe(self) -> str:
        """A form safe to log (a source never holds a token)."""
        if self.git_url:
            return f"{self.git_url}#{self.branch or 'HEAD'}" + (f"@{self.commit}" if self.commit else "")
        return self.directory or f"upload {self.upload}"


@dataclass(frozen=True)
class BuildSpec:
    """Everything a run needs to build, secrets included (which are never written to a run)."""

    source: Source
    dockerfile: str = "Dockerfile"
    build_args: dict[str, str] = field(default_factory=dict)
    platform: str = "linux"
    secret_args: dict[str, str] = field(default_factory=dict)
    git_token: str | None = None
    # The task's registry credentials: the build pulls its bases with them.
    credentials: tuple[RegistryCredential, ...] = ()

    def secrets(self) -> list[str]:
        """Every secret value, for hiding them in logs."""
        passwords = [c.password for c in self.credentials]
        return [v for v in [*self.secret_args.values(), self.git_token, *passwords] if v]

    def to_record(self) -> dict[str, Any]:
        """The stored form of a quick build's spec; quick builds take no secrets."""
        if self.secrets():
            raise ValueError("a build spec with secrets is never stored")
        return {"context_blob": self.source.upload, "dockerfile": self.dockerfile,
                "build_args": dict(self.build_args), "platform": self.platform}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> BuildSpec:
        return cls(source=Source(upload=record.get("context_blob")),
                   dockerfile=record.get("dockerfile") or "Dockerfile",
                   build_args=dict(record.get("build_args") or {}),
                   platform=record.get("platform") or "linux")


@dataclass(frozen=True)
class BuildContext:
    """The prepared sources a builder builds from: always a local directory; for git sources also
    the repository, for builders that clone it themselves (ACR)."""

    path: str
    git_url: str | None = None
    branch: str | None = None
    git_token: str | None = None
    # The commit to build (a source trigger's run); None: the branch's tip.
    commit: str | None = None

    def describe(self) -> str:
        """A form safe to log: never includes the token."""
        if self.git_url:
            return f"{self.git_url}#{self.branch or 'HEAD'}" + (f"@{self.commit}" if self.commit else "")
        return self.path


@dataclass(frozen=True)
class BuildRequest:
    run_id: str
    context: BuildContext
    dockerfile: str
    images: list[str]
    build_args: dict[str, str] = field(default_factory=dict)
    secret_args: dict[str, str] = field(default_factory=dict)
    platform: str = "linux"
    timeout_seconds: int = 3600
    # Registry credentials to pull the bases with (never logged; buildah gets them in an auth file).
    credentials: tuple[RegistryCredential, ...] = ()
    # Normalized base references the Dockerfile uses (from shared.domain.dockerfile), to report digests.
    base_images: list[str] = field(default_factory=list)
    # A forced run: no layer cache, bases pulled anew.
    no_cache: bool = False
    # Set when the run is canceled while it builds; builders stop as soon as they can.
    cancel: threading.Event = field(default_factory=threading.Event, compare=False)
    # Asked right before anything is pushed: False once another attempt has taken the run over (this
    # worker was presumed dead), and then this build must not push.
    still_ours: Callable[[], bool] = field(default=lambda: True, compare=False)
    # The builder's own run an earlier attempt of this run started (Run.builder_run_id): a builder
    # that runs builds elsewhere (ACR) follows that one instead of starting another.
    builder_run_id: str | None = None
    # Called as soon as such a builder has started its own run, with its id: saves it on the run
    # record. False when another attempt has taken the run over meanwhile: the builder then stops
    # the run it started, so that two attempts never both push.
    record_builder_run: Callable[[str], bool] = field(default=lambda _: True, compare=False)
    # Annotations every image of the run carries (shared.domain.rebase.build_annotations); the
    # builder adds the final stage's base (`final_base`) with the digest it built on.
    annotations: dict[str, str] = field(default_factory=dict)
    final_base: str | None = None


@dataclass(frozen=True)
class BuildResult:
    """How a build ended: a terminal run status, mapped onto the run record unchanged."""

    status: RunStatus
    output_digest: str | None = None
    base_digests: dict[str, str] = field(default_factory=dict)
    reason: str | None = None
    # Each base's layer digests, when the builder knows them (the rebase builder read them).
    base_layers: dict[str, list[str]] = field(default_factory=dict)
    # When the image was built, and when its last tag was pushed, when the builder tells them apart
    # (the patch latency's steps; the worker takes its own end time for a push it was not told of).
    built_at: datetime | None = None
    pushed_at: datetime | None = None


LogSink = Callable[[str], None]
