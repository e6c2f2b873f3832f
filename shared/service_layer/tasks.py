"""Creating, changing and deleting tasks; their dependencies come from the Dockerfile.

A change or a delete may be conditional (HTTP If-Match): `expected` names the versions the caller
accepts. It is checked against the task as read, before any work, and again by the storage in the
write itself (the etag read), so two changes made from the same version never both succeed.
"""

from __future__ import annotations

import base64
import binascii
import logging
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from shared.domain.builds import ContextError, ContextNotReadInPlace, LocalContextRoots, read_dockerfile
from shared.domain.dockerfile import secret_arg_warnings
from shared.domain.rebuild_graph import find_cycle, spell_cycle
from shared.domain.tasks import (
    ContextUploadNeeded,
    Dependency,
    ExpectedVersion,
    GraphChanged,
    Task,
    TaskChanged,
    TaskError,
    TaskExists,
    TaskNotFound,
    compute_dependencies,
)
from shared.domain.vocabulary import utc_now
from shared.service_layer.dependencies import DependencyIndex
from shared.service_layer.ports import Registry, Sources, TaskRepository
from shared.service_layer.scheduling import MAX_CONTEXT_BYTES

log = logging.getLogger(__name__)

# A write checked for cycles that meets a concurrent change of the graph reads it and checks again,
# this many times at most.
GRAPH_ATTEMPTS = 10


class TaskService:
    def __init__(self, store: TaskRepository, index: DependencyIndex, registry: Registry, sources: Sources,
                 work_dir: str, local_roots: LocalContextRoots, default_registry_host: str | None = None,
                 secret_args_as_build_args: bool = False):
        # Where image names without a registry host go (to know which images a task pushes).
        self.default_registry_host = default_registry_host
        self.store = store
        self.index = index
        self.registry = registry
        self.sources = sources
        self.work_dir = Path(work_dir)
        # A directory context means "a directory on the machine that builds". Read in place only
        # under these roots (the local stack's examples): anywhere else it would let a caller build,
        # or read through the Dockerfile parser's errors, the host's own files. Elsewhere, and in the
        # cloud, a directory context is built from the archive the CLI uploads with it.
        self.local_roots = local_roots
        # How the builder passes secret args (see shared.domain.dockerfile.secret_arg_warnings).
        self.secret_args_as_build_args = secret_args_as_build_args

    def get(self, name: str) -> Task:
        return self.store.get(name)

    def all(self) -> list[Task]:
        return self.store.all()

    def discover(self, task: Task, commit: str | None = None) -> tuple[list[Dependency], list[str]]:
        """The task's dependencies, from the Dockerfile (at `commit` of a git context, if given),
        with the digest each base has right now, and the warnings about that Dockerfile."""
        if not task.is_git and not task.context_upload:
            try:
                self.local_roots.directory(task.context)
            except ContextNotReadInPlace as exc:
                raise ContextUploadNeeded(str(exc)) from None
        spec = task.build_spec(commit=commit)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        try:
            with tempfile.TemporaryDirectory(dir=self.work_dir) as tmp:
                text = read_dockerfile(self.sources.checkout(spec, Path(tmp)), spec.dockerfile)
        except ContextError as exc:
            raise TaskError(str(exc)) from exc
        deps = compute_dependencies(text, task.build_args)
        for dep in deps:
            dep.digest = self.registry.resolve_digest(dep.image, task.platform, task.credentials)
        return deps, secret_arg_warnings(text, task.secret_args, self.secret_args_as_build_args)

    def create(self, task: Task, context_archive: str | None = None) -> Task:
        """A new task. `context_archive` (base64 .tar.gz) is its directory's content, uploaded by
        the client: kept and built from when the builder cannot read the directory itself."""
        task.context_upload = None
        task.validate()
        self._place_context(task, context_archive)
        try:
            task.dependencies, task.warnings = self.discover(task)
        except Exception:
            self._remove_upload(task.context_upload)  # refused before any record named it
            raise
        try:
            task.etag = self._write_checked(
                task, lambda t, version: self.store.create(t, graph_version=version))
        except (TaskError, TaskExists, GraphChanged):
            # Refused; another error of the write itself may have kept the record, and the upload with it.
            self._remove_upload(task.context_upload)
            raise
        self.index.sync_task(task, previous=[])
        return task

    def update(self, name: str, context_archive: str | None = None, expected: ExpectedVersion | None = None,
               **changes: Any) -> Task:
        current = self.store.get(name)
        _check_version(current, expected)
        changes.pop("context_upload", None)  # set here only, from an archive
        updated = replace(current, **changes, updated_at=utc_now())
        if "context" in changes:
            # The context given again, even the same path, means its files now: an upload of
            # what the directory held before is not that (the client sends the archive anew).
            updated.context_upload = None
        updated.validate()
        self._place_context(updated, context_archive)
        try:
            updated.dependencies, updated.warnings = self.discover(updated)
        except Exception:
            if updated.context_upload != current.context_upload:
                self._remove_upload(updated.context_upload)  # refused: the task keeps its own
            raise
        # With a version expected, the write holds only if the task is still the one read (a
        # change or a delete since is refused by the storage). Without, it replaces whatever is
        # stored, as before, but never brings back a task deleted meanwhile.
        condition = _write_condition(current, expected)
        try:
            updated.etag = self._write_checked(
                updated, lambda t, version: self.store.save(t, etag=condition, graph_version=version))
        except (TaskError, GraphChanged, TaskChanged, TaskNotFound):
            if updated.context_upload != current.context_upload:
                self._remove_upload(updated.context_upload)  # refused: the task keeps its own
            raise
        self.index.sync_task(updated, previous=current.dependencies)
        if current.context_upload != updated.context_upload:
            # Replaced or dropped (another archive, a git URL, a directory read in place), and only
            # now that the task no longer names it: a crash before this leaves an orphan blob, never
            # a task pointing at a deleted archive. Runs never hold the name: a run reads its task
            # when it starts (Worker._resolve), so a queued run builds the new context; one that read
            # the task just before this finds its archive gone and reads the task again.
            self._remove_upload(current.context_upload)
        return updated

    def _write_checked(self, task: Task, write: Callable[[Task, str], str]) -> str:
        """Check that `task` closes no cycle and write it, as one step: the write goes through only
        if the graph is still as read (two tasks closing a cycle, written at once, are never both
        accepted); when it changed meanwhile, it is read and checked again."""
        for _ in range(GRAPH_ATTEMPTS):
            tasks, version = self.store.graph()
            self._refuse_cycles(task, tasks)
            try:
                return write(task, version)
            except GraphChanged:
                continue
        raise GraphChanged("the tasks kept changing while this one was checked; try again")

    def _refuse_cycles(self, task: Task, tasks: list[Task]) -> None:
        """A task built FROM what it (through other tasks) pushes would rebuild forever."""
        others = [t for t in tasks if t.name != task.name]
        cycle = find_cycle(task, others, self.default_registry_host)
        if cycle:
            raise TaskError(f"the task would close a cycle: {spell_cycle(cycle)}")

    def _place_context(self, task: Task, context_archive: str | None) -> None:
        """Where a directory context's files come from: the directory itself where this builder can
        read it (the local stack), else the uploaded archive, kept under a name of its own."""
        if context_archive is None:
            return
        if task.is_git:
            raise TaskError("a context archive goes with a directory context, not a git URL")
        archive = decode_archive(context_archive)
        if self._reads_directory(task.context):
            task.context_upload = None  # read at each run, as the local stack always has
            return
        upload = f"task-{task.name}-{uuid.uuid4().hex[:8]}.tar.gz"
        self.sources.upload(upload, archive)
        task.context_upload = upload

    def _reads_directory(self, path: str) -> bool:
        try:
            self.local_roots.directory(path)
        except ContextNotReadInPlace:
            return False
        return True

    def delete(self, name: str, expected: ExpectedVersion | None = None) -> Task:
        task = self.store.get(name)
        _check_version(task, expected)
        self.index.forget_task(task)
        try:
            self.store.delete(name, etag=_write_condition(task, expected))
        except TaskChanged:
            # Changed between the read and the delete (a narrow race): the task stays, so its index
            # rows, forgotten above so that a crash never leaves rows of a deleted task, come back
            # as the task now defines them.
            self.index.sync_task(self.store.get(name), previous=[])
            raise
        # After the record is gone, as in update; a run of the task fails "was deleted" anyway.
        self._remove_upload(task.context_upload)
        return task

    def _remove_upload(self, upload: str | None) -> None:
        """Delete an upload no task names any more. A failure leaves an orphan blob (logged), not a
        failed request: what the request changed is saved."""
        if not upload:
            return
        try:
            self.sources.remove(upload)
        except Exception:
            log.warning("could not delete the context upload %s; it stays as an orphan", upload,
                        exc_info=True)

    def record_build(self, task: Task, built_on: list[Dependency],
                     previous: list[Dependency] | None = None) -> bool:
        """After a successful run of `task` (as the run read it): what it was built on becomes the
        task's dependencies. Only those are written, so a change made while the run built stays,
        and a task deleted meanwhile stays deleted (False). With `previous` (the bases before a
        commit changed them), the task is indexed anew: dropped from the bases it no longer uses."""
        try:
            self.store.set_dependencies(task.name, built_on)
        except TaskNotFound:
            return False
        if previous is not None:
            self.index.sync_task(replace(task, dependencies=built_on), previous=previous)
        else:
            self.index.record_build(task, built_on)
        return True


def _check_version(task: Task, expected: ExpectedVersion | None) -> None:
    """TaskChanged, before any work, when the task read is not at a version the caller expects."""
    if expected is not None and not expected.admits(task.etag):
        raise TaskChanged(f"task {task.name!r} changed since it was read: it is at another version "
                          "than the one given (If-Match); read it again", task.etag)


def _write_condition(read: Task, expected: ExpectedVersion | None) -> str | None:
    """The etag a write must find stored: the one read when a version is expected (it is one of
    the expected ones, checked), none for `*` (any version of an existing task) or no condition."""
    if expected is None or expected.any_version:
        return None
    return read.etag


def decode_archive(context_b64: str) -> bytes:
    """A base64 .tar.gz context as bytes; TaskError when it is not base64 or too large."""
    try:
        archive = base64.b64decode(context_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise TaskError("context_archive must be a base64-encoded .tar.gz archive") from exc
    if len(archive) > MAX_CONTEXT_BYTES:
        raise TaskError(f"the context archive exceeds {MAX_CONTEXT_BYTES // (1024 * 1024)} MiB")
    return archive
