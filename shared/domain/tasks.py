"""Tasks: what to build, from where, into which images, and which base images trigger it."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from shared.domain.builds import BuildSpec, Source, is_git_url
from shared.domain.credentials import CredentialError, RegistryCredential, check_unique
from shared.domain.dockerfile import DockerfileError, parse_dependencies
from shared.domain.image_ref import fits_a_key
from shared.domain.images import render as render_image
from shared.domain.notifications import EndpointError, check_endpoint
from shared.domain.platforms import InvalidPlatform, Platform
from shared.domain.timers import TaskTimer, TimerError, check_timers
from shared.domain.vocabulary import BaseChangePolicy, TriggerType, UpdatePolicy, format_time, names, utc_now

# 1: the first stored form (secrets sealed in one property, dependencies as JSON).
SCHEMA_VERSION = 1
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")


class TaskError(ValueError):
    """The task definition is invalid (bad name, bad Dockerfile, bad reference…)."""


class ContextUploadNeeded(TaskError):
    """The builder cannot read the task's context directory: the client must send its archive."""


class TaskNotFound(LookupError):
    pass


class TaskExists(ValueError):
    pass


class TaskChanged(Exception):
    """The task is not at the version the caller expected (HTTP If-Match): it changed since they
    read it, and nothing was written. `etag` is the version stored now (None if unknown)."""

    def __init__(self, message: str, etag: str | None = None):
        super().__init__(message)
        self.etag = etag


@dataclass(frozen=True)
class ExpectedVersion:
    """The versions of a task a conditional change accepts: any existing one (`If-Match: *`), or
    one of `etags` (the storage's etags, as TaskRepository hands them out in Task.etag)."""

    etags: frozenset[str] = frozenset()
    any_version: bool = False

    def admits(self, etag: str | None) -> bool:
        return self.any_version or (etag is not None and etag in self.etags)


class GraphChanged(RuntimeError):
    """The task graph changed since it was read (a task created or changed meanwhile): a write that
    was checked against it (no cycle) must read it again and check again."""


# What a task's text fields may hold (a row property holds 32K characters; the entity 1 MiB).
MAX_TEXT = 2048
MAX_IMAGES = 100
MAX_ARGS_TEXT = 16_000
_ARG_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_command(text: str) -> list[str]:
    """The argv words of a rebase check (`node --version`), split as a shell would, never run by one."""
    if not isinstance(text, str) or len(text) > MAX_TEXT or not text.isprintable():
        raise TaskError(f"the rebase check must be printable text of at most {MAX_TEXT} characters")
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise TaskError(f"the rebase check cannot be split into words: {exc}") from None
    if not words:
        raise TaskError("the rebase check names no command")
    return words


def check_name(name: str) -> str:
    # fullmatch: `$` alone also matches before a final newline, and `x\n` is no table key.
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise TaskError(f"invalid task name {name!r}: use letters, digits, '-' and '_' (at most 63)")
    return name


@dataclass
class Dependency:
    """A base image of the task, whether it is in the final stage's chain, and the digest the task
    last built on (or saw when it was created)."""

    image: str
    digest: str | None = None
    runtime: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"image": self.image, "digest": self.digest, "runtime": self.runtime}


@dataclass
class Task:
    name: str
    images: list[str]
    context: str
    dockerfile: str = "Dockerfile"
    branch: str | None = None
    build_args: dict[str, str] = field(default_factory=dict)
    secret_args: dict[str, str] = field(default_factory=dict)
    git_token: str | None = None
    trigger_enabled: bool = True
    trigger_type: TriggerType = TriggerType.RUNTIME
    platform: str = "linux"
    # What a run triggered by a base update does: build again, or swap the base's layers
    # (shared.domain.rebase); `auto` rebases only where that is provably a rebuild's equal.
    update_policy: UpdatePolicy = UpdatePolicy.REBUILD
    # A command run in a rebased image before it is tagged (`node --version`): argv words, no shell.
    # When it fails the run rebuilds instead. None: no check.
    rebase_check: str | None = None
    # What a base change's classification means for the runs it starts: rebuild on any change,
    # skip `identical content`, or hold `os release changed` for approval (shared.domain.change_policy).
    base_change_policy: BaseChangePolicy = BaseChangePolicy.ANY
    # The uploaded archive of a directory context (a blob of build-contexts), when the builder cannot
    # read the directory itself: the CLI uploads it at `task create`/`update`, as `az acr build` does.
    context_upload: str | None = None
    dependencies: list[Dependency] = field(default_factory=list)
    # Registry sign-ins for reading and pulling the bases (`task credential add`); passwords sealed.
    credentials: list[RegistryCredential] = field(default_factory=list)
    # What the owner should know about the Dockerfile as last read (a secret arg read through ARG).
    warnings: list[str] = field(default_factory=list)
    # Runs on a schedule (`task timer add`, `--schedule`): shared.domain.timers.
    timers: list[TaskTimer] = field(default_factory=list)
    # Runs on a push / a pull request to the context's repository and branch (a git context only).
    commit_trigger_enabled: bool = False
    pull_request_trigger_enabled: bool = False
    # Where notifications of its runs go (`--update-trigger-endpoint`), and the key that signs them
    # (stored sealed, never shown): shared.domain.notifications.
    update_trigger_endpoint: str | None = None
    update_trigger_secret: str | None = None
    created_at: datetime = field(default_factory=utc_now)
    updated_at: datetime = field(default_factory=utc_now)
    # The stored version this task was read at (the table entity's etag; None before it is stored).
    # Left out of ==: it says when the task was stored, not what the task is.
    etag: str | None = field(default=None, compare=False, repr=False)

    def validate(self) -> None:
        check_name(self.name)
        if not self.images:
            raise TaskError("a task needs at least one --image")
        if self.trigger_type not in set(TriggerType):
            raise TaskError(f"base image trigger type must be {' or '.join(names(TriggerType))}, "
                            f"not {self.trigger_type!r}")
        self.trigger_type = TriggerType(self.trigger_type)
        if self.update_policy not in set(UpdatePolicy):
            raise TaskError(f"update policy must be {' or '.join(names(UpdatePolicy))}, "
                            f"not {str(self.update_policy)[:40]!r}")
        self.update_policy = UpdatePolicy(self.update_policy)
        if self.base_change_policy not in set(BaseChangePolicy):
            raise TaskError(f"base change policy must be {' or '.join(names(BaseChangePolicy))}, "
                            f"not {str(self.base_change_policy)[:40]!r}")
        self.base_change_policy = BaseChangePolicy(self.base_change_policy)
        self.rebase_check = self.rebase_check or None
        if self.rebase_check is not None:
            check_command(self.rebase_check)
        if not self.context:
            raise TaskError("a task needs a context (a directory or a git URL)")
        self._check_sizes()
        if self.is_git:
            try:
                url = urlsplit(self.context)
                url.port  # noqa: B018 - parses the port: ValueError for a bad one
            except ValueError as exc:
                raise TaskError(f"invalid git URL: {exc}") from exc
            if url.password or (url.scheme in ("http", "https") and url.username):
                raise TaskError("a git URL must not carry credentials (they would be shown with the "
                                "task); give the token with --git-access-token")
        try:  # the platform selects a manifest of multi-platform bases: it must be readable
            self.platform = str(Platform.parse(self.platform)) if self.platform != "linux" else self.platform
        except InvalidPlatform as exc:
            raise TaskError(str(exc)) from exc
        try:
            check_unique(self.credentials)
        except CredentialError as exc:
            raise TaskError(str(exc)) from exc
        try:
            check_timers(self.timers)
        except TimerError as exc:
            raise TaskError(str(exc)) from exc
        if (self.commit_trigger_enabled or self.pull_request_trigger_enabled) and not self.is_git:
            raise TaskError("source triggers (commit, pull request) need a git URL as the context")
        try:
            check_endpoint(self.update_trigger_endpoint, self.update_trigger_secret)
        except EndpointError as exc:
            raise TaskError(str(exc)) from exc
        if self.context_upload and self.is_git:
            raise TaskError("an uploaded context goes with a directory, not a git URL")
        for template in self.images:
            try:  # an invalid template must fail here, not later in every dispatch of its bases
                render_image(template, "da0", "registry.invalid", commit="0" * 40, branch="main")
            except ValueError as exc:
                raise TaskError(f"invalid image {template!r}: {exc}") from exc

    def _check_sizes(self) -> None:
        """Text fields readable and small enough for a table row (64 KiB per property, 1 MiB per
        entity): a refusal here, not a storage error later."""
        texts = {"context": self.context, "dockerfile": self.dockerfile, "branch": self.branch or ""}
        for field_name, text in texts.items():
            if len(text) > MAX_TEXT or not text.isprintable():
                raise TaskError(f"{field_name} must be printable text of at most {MAX_TEXT} characters")
        if len(self.images) > MAX_IMAGES or any(len(i) > MAX_TEXT for i in self.images):
            raise TaskError(f"a task names at most {MAX_IMAGES} images of at most {MAX_TEXT} characters")
        for kind, args in (("build", self.build_args), ("secret", self.secret_args)):
            for key, value in args.items():
                if not _ARG_NAME.fullmatch(key):
                    raise TaskError(f"{kind} arg {key[:40]!r} is not a name (letters, digits, _)")
                if not isinstance(value, str):
                    raise TaskError(f"{kind} arg {key} must be a string")
                if "\0" in value:  # no process argument or environment can hold one
                    raise TaskError(f"{kind} arg {key} must not hold a NUL byte")
            if sum(len(k) + len(v) for k, v in args.items()) > MAX_ARGS_TEXT:
                raise TaskError(f"{kind} args total at most {MAX_ARGS_TEXT} characters")

    @property
    def is_git(self) -> bool:
        return is_git_url(self.context)

    def build_spec(self, commit: str | None = None) -> BuildSpec:
        """What a run of this task builds: its upload if it has one, else its directory or git URL
        (at `commit`, for a run a source trigger started)."""
        source = Source(upload=self.context_upload) if self.context_upload else Source.of_context(
            self.context, self.branch, commit)
        return BuildSpec(source=source, dockerfile=self.dockerfile,
                         build_args=dict(self.build_args), platform=self.platform,
                         secret_args=dict(self.secret_args), git_token=self.git_token,
                         credentials=tuple(self.credentials))

    def public_dict(self) -> dict[str, Any]:
        """What the API shows: secret values are replaced by their names."""
        return {
            "name": self.name,
            "images": self.images,
            "context": self.context,
            "context_upload": self.context_upload,
            "branch": self.branch,
            "dockerfile": self.dockerfile,
            "build_args": self.build_args,
            "secret_args": sorted(self.secret_args),
            "git_access_token": bool(self.git_token),
            "base_image_trigger": {"enabled": self.trigger_enabled, "type": str(self.trigger_type)},
            "platform": self.platform,
            "update_policy": str(self.update_policy),
            "rebase_check": self.rebase_check,
            "base_change_policy": str(self.base_change_policy),
            "credentials": [c.public_dict() for c in self.credentials],
            "timers": [t.to_dict() for t in self.timers],
            "source_triggers": {"commit": self.commit_trigger_enabled,
                                "pull_request": self.pull_request_trigger_enabled},
            "update_trigger": {"endpoint": self.update_trigger_endpoint,
                               "secret": bool(self.update_trigger_secret)},
            "dependencies": [d.to_dict() for d in self.dependencies],
            "warnings": list(self.warnings),
            "created_at": format_time(self.created_at),
            "updated_at": format_time(self.updated_at),
        }


def compute_dependencies(dockerfile_text: str, build_args: dict[str, str]) -> list[Dependency]:
    """Every external base of the Dockerfile, flagged whether it is in the final stage's chain.

    Secret args are never passed here: a FROM built from a secret would put it in index keys and
    API answers. Errors quote nothing of the file but an instruction word (DockerfileError.public):
    they reach API answers and run logs, and the file was read on the service's machine.
    """
    try:
        deps = parse_dependencies(dockerfile_text, build_args)
    except DockerfileError as exc:
        raise TaskError(f"cannot read the Dockerfile: {exc.public}") from exc
    for stage in deps.stages:
        # Bases key the dependency index (`base|<image>`): one too long for a key is refused here,
        # before anything is stored, not when the index is written.
        if stage.external_base and not fits_a_key(stage.external_base):
            raise TaskError(f"cannot read the Dockerfile: line {stage.line}: the base image is too long "
                            "to track (its name must fit a 1 KiB table key)")
    runtime = set(deps.runtime)
    return [Dependency(image=image, runtime=image in runtime) for image in deps.all]
