"""Tasks: what to build, from where, into which images, and which base images trigger it.

Table `tasks`: PartitionKey `task`, RowKey = task name (a task list is one partition read).
Secret build args and the git token are stored only sealed (shared.secrets). Dependencies are
computed from the Dockerfile when the task is created or changed, and refreshed after every run,
with the digest each base had; the dependency index (shared.dependencies) mirrors them.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from shared import contexts
from shared.dependencies import DependencyIndex, DependencyRow
from shared.dockerfile import parse_dependencies
from shared.images import render as render_image
from shared.registry import RegistryClient
from shared.secrets import SecretBox
from shared.storage import Storage

PARTITION = "task"
TRIGGER_TYPES = ("Runtime", "All")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
SCHEMA_VERSION = 1


class TaskError(ValueError):
    """The task definition is invalid (bad name, bad Dockerfile, bad reference…)."""


class TaskNotFound(LookupError):
    pass


class TaskExists(ValueError):
    pass


@dataclass
class Dependency:
    image: str
    digest: str | None = None
    runtime: bool = True


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
    trigger_type: str = "Runtime"
    platform: str = "linux"
    dependencies: list[Dependency] = field(default_factory=list)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def validate(self) -> None:
        if not _NAME.match(self.name):
            raise TaskError(
                f"invalid task name {self.name!r}: use letters, digits, '-' and '_' (at most 63)"
            )
        if not self.images:
            raise TaskError("a task needs at least one --image")
        if self.trigger_type not in TRIGGER_TYPES:
            raise TaskError(f"base image trigger type must be Runtime or All, not {self.trigger_type!r}")
        if not self.context:
            raise TaskError("a task needs a context (a directory or a git URL)")
        for template in self.images:
            try:  # an invalid template must fail here, not later in every dispatch of its bases
                render_image(template, "da0", "registry.invalid")
            except ValueError as exc:
                raise TaskError(f"invalid image {template!r}: {exc}") from exc

    @property
    def is_git(self) -> bool:
        return contexts.is_git_url(self.context)

    def public_dict(self) -> dict[str, Any]:
        """What the API shows: secret values are replaced by their names."""
        return {
            "name": self.name,
            "images": self.images,
            "context": self.context,
            "branch": self.branch,
            "dockerfile": self.dockerfile,
            "build_args": self.build_args,
            "secret_args": sorted(self.secret_args),
            "git_access_token": bool(self.git_token),
            "base_image_trigger": {"enabled": self.trigger_enabled, "type": self.trigger_type},
            "platform": self.platform,
            "dependencies": [vars(d) for d in self.dependencies],
            "created_at": self.created_at.isoformat().replace("+00:00", "Z"),
            "updated_at": self.updated_at.isoformat().replace("+00:00", "Z"),
        }

    def to_entity(self, box: SecretBox) -> dict[str, Any]:
        return {
            "PartitionKey": PARTITION,
            "RowKey": self.name,
            "SchemaVersion": SCHEMA_VERSION,
            "Images": json.dumps(self.images),
            "Context": self.context,
            "Branch": self.branch or "",
            "Dockerfile": self.dockerfile,
            "BuildArgs": json.dumps(self.build_args),
            "SealedSecrets": box.seal(
                {**{f"arg:{k}": v for k, v in self.secret_args.items()},
                 **({"git_token": self.git_token} if self.git_token else {})}
            ),
            "TriggerEnabled": self.trigger_enabled,
            "TriggerType": self.trigger_type,
            "Platform": self.platform,
            "Dependencies": json.dumps([vars(d) for d in self.dependencies]),
            "CreatedAt": self.created_at.isoformat(),
            "UpdatedAt": self.updated_at.isoformat(),
        }

    @classmethod
    def from_entity(cls, entity: Any, box: SecretBox) -> Task:
        secrets = box.open(entity.get("SealedSecrets"))
        return cls(
            name=entity["RowKey"],
            images=json.loads(entity["Images"]),
            context=entity["Context"],
            dockerfile=entity.get("Dockerfile") or "Dockerfile",
            branch=entity.get("Branch") or None,
            build_args=json.loads(entity.get("BuildArgs") or "{}"),
            secret_args={k[4:]: v for k, v in secrets.items() if k.startswith("arg:")},
            git_token=secrets.get("git_token"),
            trigger_enabled=bool(entity.get("TriggerEnabled")),
            trigger_type=entity.get("TriggerType") or "Runtime",
            platform=entity.get("Platform") or "linux",
            dependencies=[Dependency(**d) for d in json.loads(entity.get("Dependencies") or "[]")],
            created_at=datetime.fromisoformat(entity["CreatedAt"]),
            updated_at=datetime.fromisoformat(entity["UpdatedAt"]),
        )


def compute_dependencies(dockerfile_text: str, build_args: dict[str, str]) -> list[Dependency]:
    """Every external base of the Dockerfile, flagged whether it is in the final stage's chain."""
    try:
        deps = parse_dependencies(dockerfile_text, build_args)
    except ValueError as exc:  # DockerfileError and InvalidReference both name the problem
        raise TaskError(f"cannot read the Dockerfile: {exc}") from exc
    runtime = set(deps.runtime)
    return [Dependency(image=image, runtime=image in runtime) for image in deps.all]


class TaskStore:
    def __init__(self, storage: Storage, box: SecretBox):
        self.storage = storage
        self.box = box

    @property
    def table(self) -> TableClient:
        return self.storage.table("tasks")

    def get(self, name: str) -> Task:
        try:
            return Task.from_entity(self.table.get_entity(PARTITION, name), self.box)
        except ResourceNotFoundError as exc:
            raise TaskNotFound(f"task {name!r} not found") from exc

    def create(self, task: Task) -> None:
        try:
            self.table.create_entity(task.to_entity(self.box))
        except ResourceExistsError as exc:
            raise TaskExists(f"task {task.name!r} already exists") from exc

    def save(self, task: Task) -> None:
        self.table.upsert_entity(task.to_entity(self.box), mode=UpdateMode.REPLACE)

    def set_dependencies(self, name: str, deps: list[Dependency]) -> None:
        try:
            self.table.update_entity(
                {"PartitionKey": PARTITION, "RowKey": name,
                 "Dependencies": json.dumps([vars(d) for d in deps])},
                mode=UpdateMode.MERGE,
            )
        except ResourceNotFoundError as exc:
            raise TaskNotFound(f"task {name!r} not found") from exc

    def delete(self, name: str) -> None:
        self.table.delete_entity(PARTITION, name)

    def list(self) -> list[Task]:
        entities = self.table.query_entities("PartitionKey eq @pk", parameters={"pk": PARTITION})
        return [Task.from_entity(e, self.box) for e in entities]


class TaskService:
    """Creating, changing and deleting tasks, keeping the dependency index in step."""

    def __init__(self, store: TaskStore, index: DependencyIndex, registry: RegistryClient, work_dir: str,
                 allow_local_contexts: bool = True):
        self.store = store
        self.index = index
        self.registry = registry
        self.work_dir = work_dir
        # A directory context means "a directory on the machine that builds". That is the local
        # stack; in the cloud it would let a caller build the Function App's own files into an image.
        self.allow_local_contexts = allow_local_contexts

    def read_dockerfile(self, task: Task) -> str:
        if not task.is_git:
            return contexts.read_dockerfile(contexts.local_dir(task.context), task.dockerfile)
        Path(self.work_dir).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.work_dir) as tmp:
            checkout = contexts.clone(task.context, task.branch, task.git_token, Path(tmp) / "src")
            return contexts.read_dockerfile(checkout, task.dockerfile)

    def discover(self, task: Task) -> list[Dependency]:
        """Dependencies from the Dockerfile, with the digest each base has right now."""
        if not task.is_git and not self.allow_local_contexts:
            raise TaskError("this deployment builds from git contexts only (a git URL and --branch); "
                            "use `basetrigger build` to upload a directory")
        try:
            text = self.read_dockerfile(task)
        except contexts.ContextError as exc:
            raise TaskError(str(exc)) from exc
        # Secret args are left out on purpose: a FROM built from a secret would put it in index
        # keys and API answers.
        deps = compute_dependencies(text, task.build_args)
        for dep in deps:
            dep.digest = self.registry.resolve_digest(dep.image)
        return deps

    def create(self, task: Task) -> Task:
        task.validate()
        task.dependencies = self.discover(task)
        self.store.create(task)
        self.sync_index(task, previous=[])
        return task

    def update(self, name: str, **changes: Any) -> Task:
        current = self.store.get(name)
        updated = replace(current, **changes, updated_at=datetime.now(UTC))
        updated.validate()
        updated.dependencies = self.discover(updated)
        self.store.save(updated)
        self.sync_index(updated, previous=current.dependencies)
        return updated

    def delete(self, name: str) -> Task:
        task = self.store.get(name)
        for dep in task.dependencies:
            self.index.remove(dep.image, task.name)
        self.store.delete(name)
        return task

    def record_build(self, name: str, deps: list[Dependency]) -> Task | None:
        """After a successful run: the dependencies it was built with become the task's.

        Only the dependencies are written, onto the task as it is now: a change made while the
        run built stays, and a task deleted meanwhile stays deleted (None).
        """
        try:
            current = self.store.get(name)
            self.store.set_dependencies(name, deps)
        except TaskNotFound:
            return None
        previous, current.dependencies = current.dependencies, deps
        self.sync_index(current, previous=previous)
        return current

    def sync_index(self, task: Task, previous: list[Dependency]) -> None:
        for dep in task.dependencies:
            self.index.put(DependencyRow(
                base=dep.image, task=task.name, runtime=dep.runtime,
                trigger_enabled=task.trigger_enabled, trigger_type=task.trigger_type,
                images=task.images, built_digest=dep.digest,
            ))
        current = {d.image for d in task.dependencies}
        for dep in previous:
            if dep.image not in current:
                self.index.remove(dep.image, task.name)
