"""The composition root: the app's objects, wired from the settings once per process.

Trigger adapters in functions/ call `services()` and hand decoded input to these objects; tests
build their own `Services(settings)` against a real Azurite with their own table prefix, and unit
tests wire the service layer to the in-memory fakes of tests/fakes.py instead.
"""

from __future__ import annotations

from functools import cached_property, lru_cache

from shared import config
from shared.adapters.base_table import TableBaseRepository
from shared.adapters.build_queue import StorageBuildQueue
from shared.adapters.decision_table import TableDecisionLog
from shared.adapters.dependency_table import TableDependencyTable
from shared.adapters.git_head_table import TableRepositoryHeads
from shared.adapters.git_remote import GitLsRemote
from shared.adapters.notification_sender import HttpNotificationSender
from shared.adapters.notification_table import TableNotificationOutbox
from shared.adapters.quarantine_table import TableQuarantine
from shared.adapters.registry import RegistryClient
from shared.adapters.registry_acr import AcrClient
from shared.adapters.run_backlog import BlobRunBacklog
from shared.adapters.run_logs import BlobRunLogs
from shared.adapters.run_table import TableRunRepository
from shared.adapters.secret_box import SecretBox
from shared.adapters.sources import BuildSources
from shared.adapters.storage import Storage
from shared.adapters.task_table import TableTaskRepository
from shared.adapters.timer_table import TableTimerSlots
from shared.adapters.wave_table import TableSlots, TableWaveRepository
from shared.service_layer.base_changes import BaseChanges, WaveChanges
from shared.service_layer.credentials import TaskCredentials
from shared.service_layer.dependencies import DependencyIndex
from shared.service_layer.dispatch import Dispatcher
from shared.service_layer.history import TaskHistory
from shared.service_layer.impact import ImpactAnalysis
from shared.service_layer.ingest import Ingest
from shared.service_layer.notifications import FanOut, RunNotifier
from shared.service_layer.polling import Poller
from shared.service_layer.ports import Builder, Rebaser, RunEvents
from shared.service_layer.quarantine import QuarantineList
from shared.service_layer.repo_polling import RepositoryPoller
from shared.service_layer.run_life import RunLifecycle
from shared.service_layer.run_topic import TopicRunEvents
from shared.service_layer.scheduling import Scheduler
from shared.service_layer.source_triggers import SourceTriggers
from shared.service_layer.staleness import StalenessReport
from shared.service_layer.task_timers import TaskTimers
from shared.service_layer.tasks import TaskService
from shared.service_layer.timers import TimerService
from shared.service_layer.triggered import TriggeredRuns
from shared.service_layer.waves import WaveCoordinator
from shared.service_layer.worker import Worker


class Services:
    def __init__(self, settings: config.Settings):
        self.settings = settings
        self.storage = Storage(settings)
        self.registry = RegistryClient(ca_file=settings.registry_ca, acr=self._acr_client,
                                       pool_size=max(64, settings.polling.concurrency * 2))
        self.sources = BuildSources(self.storage, settings.unpack_limits, settings.local_context_roots)

    # ---- adapters --------------------------------------------------------------------------
    def _acr_client(self) -> AcrClient:
        """ACR bases are read with the app's managed identity (the identity the storage uses)."""
        from shared.adapters.credentials import default_credential

        return AcrClient(default_credential(self.settings.storage.client_id), self.settings.acr_audience)

    @cached_property
    def credentials(self) -> TaskCredentials:
        return TaskCredentials(self.tasks)

    @cached_property
    def ingest(self) -> Ingest:
        return Ingest(self.registry, self.dispatcher, self.decisions)

    @cached_property
    def base_states(self) -> TableBaseRepository:
        return TableBaseRepository(self.storage)

    @cached_property
    def poller(self) -> Poller:
        return Poller(TableDependencyTable(self.storage), self.task_store, self.base_states, self.registry,
                      self.dispatcher, self.decisions, self.settings.polling)

    @cached_property
    def runs(self) -> TableRunRepository:
        return TableRunRepository(self.storage, self.settings.run_id_prefix)

    @cached_property
    def decisions(self) -> TableDecisionLog:
        return TableDecisionLog(self.storage)

    @cached_property
    def logs(self) -> BlobRunLogs:
        return BlobRunLogs(self.storage)

    @cached_property
    def builder(self) -> Builder:
        if self.settings.builder == "acr":
            from shared.adapters.builders.acr import AcrBuilder

            # Base digests come from the registry API (ACR's run record does not report them).
            return AcrBuilder.from_settings(self.settings, resolve_digest=self.registry.resolve_digest)
        from shared.adapters.builders.buildah import BuildahBuilder

        return BuildahBuilder(self.registry, ca_file=self.settings.registry_ca,
                              work_dir=self.settings.work_dir)

    # ---- services --------------------------------------------------------------------------
    @cached_property
    def index(self) -> DependencyIndex:
        return DependencyIndex(TableDependencyTable(self.storage))

    @cached_property
    def lifecycle(self) -> RunLifecycle:
        """The one owner of a run's life (the build queue is its alone) and of its waves."""
        return RunLifecycle(self.runs, StorageBuildQueue(self.storage, self.settings.build_queue),
                            TableSlots(self.storage), TableWaveRepository(self.storage, self.runs.ids),
                            BlobRunBacklog(self.storage), self.index, self.decisions, self.sources,
                            self.settings.brakes, self.settings.registry, lambda: self.builder,
                            events=self.run_events,
                            on_hold=self.quarantine.on_hold, on_resume=self.quarantine.on_resume)

    @cached_property
    def task_store(self) -> TableTaskRepository:
        return TableTaskRepository(self.storage, SecretBox(self.settings.secret_key))

    @cached_property
    def tasks(self) -> TaskService:
        return TaskService(self.task_store, self.index, self.registry, self.sources, self.settings.work_dir,
                           local_roots=self.settings.local_context_roots,
                           default_registry=self.settings.registry,
                           secret_args_as_build_args=self.settings.builder == "acr")

    @cached_property
    def dispatcher(self) -> Dispatcher:
        return Dispatcher(self.index, self.runs, self.decisions, self.lifecycle,
                          quarantine=self.quarantine)

    @cached_property
    def scheduler(self) -> Scheduler:
        return Scheduler(self.tasks.store, self.runs, self.lifecycle, self.sources,
                         self.settings.unpack_limits, lambda: self.builder,
                         quarantine=self.quarantine)

    @cached_property
    def triggered(self) -> TriggeredRuns:
        return TriggeredRuns(self.scheduler, self.decisions)

    @cached_property
    def timers(self) -> TimerService:
        return TimerService(self.tasks.store, TableTimerSlots(self.storage), self.triggered)

    @cached_property
    def source_triggers(self) -> SourceTriggers:
        return SourceTriggers(self.tasks, self.triggered)

    @cached_property
    def repository_poller(self) -> RepositoryPoller:
        return RepositoryPoller(self.tasks.store, GitLsRemote(), TableRepositoryHeads(self.storage),
                                self.source_triggers, self.settings.git_poll_hosts)

    @cached_property
    def task_timers(self) -> TaskTimers:
        return TaskTimers(self.tasks.store)

    @cached_property
    def waves(self) -> WaveCoordinator:
        return self.lifecycle.waves

    @cached_property
    def impact(self) -> ImpactAnalysis:
        return ImpactAnalysis(self.tasks.store, self.settings.registry)

    @cached_property
    def history(self) -> TaskHistory:
        return TaskHistory(self.tasks.store, self.decisions, self.lifecycle.reads)

    @cached_property
    def staleness(self) -> StalenessReport:
        return StalenessReport(self.tasks.store, self.lifecycle.reads, self.decisions, self.registry,
                               self.waves.waves)

    @cached_property
    def quarantine(self) -> QuarantineList:
        return QuarantineList(TableQuarantine(self.storage), self.registry, self.decisions)

    @cached_property
    def base_changes(self) -> BaseChanges:
        return BaseChanges(self.registry, self.index, self.decisions, self.tasks.store)

    @cached_property
    def worker(self) -> Worker:
        return Worker(self.runs, self.tasks, self.index, self.logs, lambda: self.builder, self.sources,
                      self.lifecycle, self.settings.work_dir, self.settings.build_timeout_seconds,
                      events=self.run_events,
                      changes=WaveChanges(self.base_changes, self.waves.waves),
                      registry=self.registry, rebaser=self.rebaser)

    @cached_property
    def notifier(self) -> RunNotifier:
        return RunNotifier(self.task_store, TableNotificationOutbox(self.storage), HttpNotificationSender(),
                           self.decisions)

    @cached_property
    def run_events(self) -> RunEvents:
        """Who hears of runs that start, end or are held: the tasks' notification endpoints, and the
        Event Grid topic of run events when BASETRIGGER_RUN_EVENTS_TOPIC names one."""
        listeners: list[RunEvents] = [self.notifier]
        if self.settings.run_events_topic:
            from shared.adapters.credentials import default_credential
            from shared.adapters.run_event_topic import EventGridRunEventPublisher

            publisher = EventGridRunEventPublisher(self.settings.run_events_topic,
                                                   default_credential(self.settings.storage.client_id))
            listeners.append(TopicRunEvents(publisher, self.decisions))
        return FanOut(listeners)

    @cached_property
    def rebaser(self) -> Rebaser:
        from shared.adapters.builders.buildah import BuildahBuilder
        from shared.adapters.builders.rebase import RebaseBuilder

        # The rebase check runs the image with buildah, where the builder is buildah.
        builder = self.builder if self.settings.builder == "buildah" else None
        return RebaseBuilder(self.registry, checker=builder if isinstance(builder, BuildahBuilder) else None)


@lru_cache(maxsize=1)
def services() -> Services:
    return Services(config.load())
