"""The object graph of the app, built once per process from the settings.

Trigger adapters in functions/ call `services()` and hand decoded input to these objects; tests
build their own `Services(settings)` against a real Azurite with their own table prefix.
"""

from __future__ import annotations

from functools import cached_property, lru_cache

from shared import config
from shared.builders.base import Builder
from shared.decisions import DecisionLog
from shared.dependencies import DependencyIndex
from shared.dispatch import Dispatcher
from shared.registry import RegistryClient
from shared.run_logs import RunLogs
from shared.runs import RunStore
from shared.scheduling import Scheduler
from shared.secrets import SecretBox
from shared.storage import Storage
from shared.tasks import TaskService, TaskStore
from shared.work_queue import BuildQueue
from shared.worker import Worker


class Services:
    def __init__(self, settings: config.Settings):
        self.settings = settings
        self.storage = Storage(settings)
        self.registry = RegistryClient(ca_file=settings.registry_ca)

    @cached_property
    def index(self) -> DependencyIndex:
        return DependencyIndex(self.storage)

    @cached_property
    def runs(self) -> RunStore:
        return RunStore(self.storage, self.settings.run_id_prefix)

    @cached_property
    def decisions(self) -> DecisionLog:
        return DecisionLog(self.storage)

    @cached_property
    def queue(self) -> BuildQueue:
        return BuildQueue(self.storage, self.settings.build_queue)

    @cached_property
    def logs(self) -> RunLogs:
        return RunLogs(self.storage)

    @cached_property
    def tasks(self) -> TaskService:
        store = TaskStore(self.storage, SecretBox(self.settings.secret_key))
        return TaskService(store, self.index, self.registry, self.settings.work_dir,
                           allow_local_contexts=self.settings.builder == "buildah")

    @cached_property
    def dispatcher(self) -> Dispatcher:
        return Dispatcher(self.index, self.runs, self.decisions, self.queue, self.settings.registry)

    @cached_property
    def scheduler(self) -> Scheduler:
        return Scheduler(self.tasks, self.runs, self.queue, self.storage, self.settings.registry)

    @cached_property
    def builder(self) -> Builder:
        if self.settings.builder == "acr":
            from shared.builders.acr import AcrBuilder

            # Base digests come from the registry API (ACR's run record does not report them).
            return AcrBuilder.from_settings(self.settings, resolve_digest=self.registry.resolve_digest)
        from shared.builders.buildah import BuildahBuilder

        return BuildahBuilder(self.registry, ca_file=self.settings.registry_ca,
                              work_dir=self.settings.work_dir)

    @cached_property
    def worker(self) -> Worker:
        return Worker(self.runs, self.tasks, self.index, self.logs, lambda: self.builder, self.storage,
                      self.settings.work_dir, self.settings.build_timeout_seconds, self.queue)


@lru_cache(maxsize=1)
def services() -> Services:
    return Services(config.load())
