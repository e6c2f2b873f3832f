"""Creating, changing and deleting tasks; their dependencies come from the Dockerfile."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from shared.domain.builds import ContextError, read_dockerfile
from shared.domain.tasks import Dependency, Task, TaskError, TaskNotFound, compute_dependencies
from shared.domain.vocabulary import utc_now
from shared.service_layer.dependencies import DependencyIndex
from shared.service_layer.ports import Registry, Sources, TaskRepository


class TaskService:
    def __init__(self, store: TaskRepository, index: DependencyIndex, registry: Registry, sources: Sources,
                 work_dir: str, allow_local_contexts: bool = True):
        self.store = store
        self.index = index
        self.registry = registry
        self.sources = sources
        self.work_dir = Path(work_dir)
        # A directory context means "a directory on the machine that builds". That is the local
        # stack; in the cloud it would let a caller build the Function App's own files into an image.
        self.allow_local_contexts = allow_local_contexts

    def get(self, name: str) -> Task:
        return self.store.get(name)

    def all(self) -> list[Task]:
        return self.store.all()

    def discover(self, task: Task) -> list[Dependency]:
        """Dependencies from the Dockerfile, with the digest each base has right now."""
        if not task.is_git and not self.allow_local_contexts:
            raise TaskError("this deployment builds from git contexts only (a git URL and --branch); "
                            "use `basetrigger build` to upload a directory")
        spec = task.build_spec()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        try:
            with tempfile.TemporaryDirectory(dir=self.work_dir) as tmp:
                text = read_dockerfile(self.sources.checkout(spec, Path(tmp)), spec.dockerfile)
        except ContextError as exc:
            raise TaskError(str(exc)) from exc
        deps = compute_dependencies(text, task.build_args)
        for dep in deps:
            dep.digest = self.registry.resolve_digest(dep.image)
        return deps

    def create(self, task: Task) -> Task:
        task.validate()
        task.dependencies = self.discover(task)
        self.store.create(task)
        self.index.sync_task(task, previous=[])
        return task

    def update(self, name: str, **changes: Any) -> Task:
        current = self.store.get(name)
        updated = replace(current, **changes, updated_at=utc_now())
        updated.validate()
        updated.dependencies = self.discover(updated)
        self.store.save(updated)
        self.index.sync_task(updated, previous=current.dependencies)
        return updated

    def delete(self, name: str) -> Task:
        task = self.store.get(name)
        self.index.forget_task(task)
        self.store.delete(name)
        return task

    def record_build(self, task: Task, built_on: list[Dependency]) -> bool:
        """After a successful run of `task` (as the run read it): what it was built on becomes the
        task's dependencies. Only those are written, so a change made while the run built stays,
        and a task deleted meanwhile stays deleted (False)."""
        try:
            self.store.set_dependencies(task.name, built_on)
        except TaskNotFound:
            return False
        self.index.record_build(task, built_on)
        return True
