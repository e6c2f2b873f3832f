"""The composition root: the service layer wired to its adapters, once per process.

`ServiceLayer(adapters, settings)` is the one place that wires the services: the app passes it
Azure's adapters (`Services(settings)`, built from the settings), the unit tests pass it the
in-memory fakes of tests/fakes.py (`FakeApp`). `Adapters` holds one object per port of
shared.service_layer.ports. Each service is built on first use: a process that only answers HTTP
never makes a builder.

Trigger adapters in functions/ call `services()` and hand decoded input to these objects; tests
build their own `Services(settings)` against a real Azurite with their own table prefix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, cached_property, lru_cache

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
from shared.adapters.settling_table import TableSettling
from shared.adapters.sources import BuildSources
from shared.adapters.storage import Storage
from shared.adapters.task_table import TableTaskRepository
from shared.adapters.timer_table import TableTimerSlots
from shared.adapters.wave_table import TableSlots, TableWaveRepository
from shared.service_layer.base_changes import BaseChanges, ImageReader, WaveChanges
from shared.service_layer.change_policy import ChangePolicies
from shared.service_layer.credentials import TaskCredentials
from shared.service_layer.dependencies import DependencyIndex
from shared.service_layer.dispatch import Dispatcher
from shared.service_layer.history import TaskHistory
from shared.service_layer.impact import ImpactAnalysis
from shared.service_layer.ingest import Ingest
from shared.service_layer.latency import PatchLatency
from shared.service_layer.notifications import FanOut, RunNotifier
from shared.service_layer.polling import Poller
from shared.service_layer.ports import (
    BaseRepository,
    Builder,
    BuilderFactory,
    BuildQueue,
    DecisionLog,
    DependencyTable,
    DispatchClaims,
    GitRemote,
    ImageStores,
    IndexScan,
    NotificationOutbox,
    NotificationSender,
    Rebaser,
    Registry,
    RepositoryHeads,
    RunBacklog,
    RunEventPublisher,
    RunEvents,
    RunLogs,
    RunRepository,
    Slots,
    Sources,
    TaskRepository,
    TimerSlots,
    WaveRepository,
)
from shared.service_layer.quarantine import QuarantineList, QuarantineStore
from shared.service_layer.repo_polling import RepositoryPoller
from shared.service_layer.rollback import Rollback
from shared.service_layer.run_life import RunLifecycle
from shared.service_layer.run_topic import TopicRunEvents
from shared.service_layer.scheduling import Scheduler
from shared.service_layer.settling import SettleWindows, SettlingStore
from shared.service_layer.source_triggers import SourceTriggers
from shared.service_layer.staleness import StalenessReport
from shared.service_layer.task_timers import TaskTimers
from shared.service_layer.tasks import TaskService
from shared.service_layer.timers import TimerService
from shared.service_layer.triggered import TriggeredRuns
from shared.service_layer.waves import WaveCoordinator
from shared.service_layer.worker import Worker


@dataclass(frozen=True)
class Adapters:
    """What the service layer runs on: one object per port (shared.service_layer.ports)."""

    runs: RunRepository
    task_store: TaskRepository
    dependencies: DependencyTable
    index_rows: IndexScan  # the dependency table again, read whole by the poller
    decisions: DecisionLog
    # Event claims and push holds: the decision table again (a claim's marker is decided when its
    # decision is stored, in one transaction).
    claims: DispatchClaims
    queue: BuildQueue  # the run lifecycle's alone
    backlog: RunBacklog  # a big wave's runs until they are recorded
    logs: RunLogs
    sources: Sources
    registry: Registry
    images: ImageReader  # the registry's manifests and blobs, for base changes
    image_stores: ImageStores  # manifests read and written as a task signs in, for --rollback
    wave_store: WaveRepository
    slots: Slots
    timer_slots: TimerSlots
    quarantine_store: QuarantineStore
    settling_store: SettlingStore
    base_states: BaseRepository
    outbox: NotificationOutbox
    sender: NotificationSender
    git: GitRemote
    heads: RepositoryHeads
    # Called where builds run, on first use: making a builder has effects (buildah clears what a
    # killed worker left; ACR's needs credentials).
    builder: BuilderFactory
    rebaser: Callable[[], Rebaser]
    # The Event Grid topic run events go to, where one is configured.
    run_event_topic: RunEventPublisher | None = None
    # How the notifier waits between an endpoint's retries (None: really waits).
    wait: Callable[[float], object] | None = None


class ServiceLayer:
    """The services, wired to `adapters` as `settings` say; each built on first use."""

    def __init__(self, adapters: Adapters, settings: config.Settings):
        self.adapters = adapters
        self.settings = settings
        self.runs = adapters.runs
        self.task_store = adapters.task_store
        self.decisions = adapters.decisions
        self.claims = adapters.claims
        self.logs = adapters.logs
        self.sources = adapters.sources
        self.registry = adapters.registry
        self.base_states = adapters.base_states

    @cached_property
    def builder(self) -> Builder:
        return self.adapters.builder()

    @cached_property
    def rebaser(self) -> Rebaser:
        return self.adapters.rebaser()

    @cached_property
    def credentials(self) -> TaskCredentials:
        return TaskCredentials(self.tasks)

    @cached_property
    def ingest(self) -> Ingest:
        return Ingest(self.registry, self.dispatcher, self.decisions)

    @cached_property
    def poller(self) -> Poller:
        return Poller(self.adapters.index_rows, self.task_store, self.base_states, self.registry,
                      self.ingest, self.decisions, self.settings.polling)

    @cached_property
    def index(self) -> DependencyIndex:
        return DependencyIndex(self.adapters.dependencies)

    @cached_property
    def lifecycle(self) -> RunLifecycle:
        """The one owner of a run's life (the build queue is its alone) and of its waves."""
        return RunLifecycle(self.runs, self.adapters.queue, self.adapters.slots, self.adapters.wave_store,
                            self.adapters.backlog, self.index, self.decisions, self.sources,
                            self.settings.brakes, self.settings.registry_host, lambda: self.builder,
                            events=self.run_events,
                            on_hold=self.quarantine.on_hold, on_resume=self.quarantine.on_resume)

    @cached_property
    def tasks(self) -> TaskService:
        return TaskService(self.task_store, self.index, self.registry, self.sources, self.settings.work_dir,
                           local_roots=self.settings.local_context_roots,
                           default_registry_host=self.settings.registry_host,
                           secret_args_as_build_args=self.settings.builder == "acr")

    @cached_property
    def dispatcher(self) -> Dispatcher:
        return Dispatcher(self.index, self.runs, self.decisions, self.claims, self.lifecycle,
                          quarantine=self.quarantine, settling=self.settling)

    @cached_property
    def settling(self) -> SettleWindows:
        return SettleWindows(self.adapters.settling_store, self.decisions, self.settings.settle)

    @cached_property
    def scheduler(self) -> Scheduler:
        return Scheduler(self.tasks.store, self.runs, self.lifecycle, self.sources,
                         self.settings.unpack_limits, lambda: self.builder,
                         quarantine=self.quarantine)

    @cached_property
    def triggered(self) -> TriggeredRuns:
        return TriggeredRuns(self.scheduler, self.decisions, self.claims)

    @cached_property
    def timers(self) -> TimerService:
        return TimerService(self.tasks.store, self.adapters.timer_slots, self.triggered)

    @cached_property
    def source_triggers(self) -> SourceTriggers:
        return SourceTriggers(self.tasks, self.triggered)

    @cached_property
    def repository_poller(self) -> RepositoryPoller:
        return RepositoryPoller(self.tasks.store, self.adapters.git, self.adapters.heads,
                                self.source_triggers, self.settings.git_poll_hosts)

    @cached_property
    def task_timers(self) -> TaskTimers:
        return TaskTimers(self.tasks.store)

    @cached_property
    def waves(self) -> WaveCoordinator:
        return self.lifecycle.waves

    @cached_property
    def impact(self) -> ImpactAnalysis:
        return ImpactAnalysis(self.tasks.store, self.settings.registry_host)

    @cached_property
    def history(self) -> TaskHistory:
        return TaskHistory(self.tasks.store, self.decisions, self.lifecycle.reads)

    @cached_property
    def staleness(self) -> StalenessReport:
        return StalenessReport(self.tasks.store, self.lifecycle.reads, self.decisions, self.registry,
                               self.waves.waves)

    @cached_property
    def latency(self) -> PatchLatency:
        return PatchLatency(self.waves.waves, self.runs, self.staleness, members=self.waves.members)

    @cached_property
    def rollback(self) -> Rollback:
        return Rollback(self.waves.waves, self.runs, self.tasks, self.registry, self.adapters.image_stores,
                        self.decisions)

    @cached_property
    def quarantine(self) -> QuarantineList:
        return QuarantineList(self.adapters.quarantine_store, self.registry, self.decisions)

    @cached_property
    def base_changes(self) -> BaseChanges:
        return BaseChanges(self.adapters.images, self.index, self.decisions, self.tasks.store)

    @cached_property
    def worker(self) -> Worker:
        return Worker(self.runs, self.tasks, self.index, self.logs, lambda: self.builder, self.sources,
                      self.lifecycle, self.settings.work_dir, self.settings.build_timeout_seconds,
                      events=self.run_events,
                      changes=WaveChanges(self.base_changes, self.waves.waves),
                      policies=ChangePolicies(self.runs, self.waves, self.decisions),
                      registry=self.registry, rebaser=self.rebaser)

    @cached_property
    def notifier(self) -> RunNotifier:
        return RunNotifier(self.task_store, self.adapters.outbox, self.adapters.sender, self.decisions,
                           wait=self.adapters.wait)

    @cached_property
    def run_events(self) -> RunEvents:
        """Who hears of runs that start, end or are held: the tasks' notification endpoints, and the
        Event Grid topic of run events when there is one."""
        listeners: list[RunEvents] = [self.notifier]
        if self.adapters.run_event_topic is not None:
            listeners.append(TopicRunEvents(self.adapters.run_event_topic, self.decisions))
        return FanOut(listeners)


class Services(ServiceLayer):
    """The app: the service layer on Azure Storage, the registries' APIs, git and buildah or ACR,
    as the settings name them."""

    # The adapters' own types: admin tasks use what only they have (migrations, resealing).
    runs: TableRunRepository
    task_store: TableTaskRepository
    decisions: TableDecisionLog
    registry: RegistryClient
    wave_store: TableWaveRepository

    def __init__(self, settings: config.Settings):
        self.storage = Storage(settings)
        registry = RegistryClient(ca_file=settings.registry_ca, acr=self._acr_client,
                                  pool_size=max(64, settings.polling.concurrency * 2))
        dependencies = TableDependencyTable(self.storage)
        runs = TableRunRepository(self.storage, settings.run_id_prefix)
        decisions = TableDecisionLog(self.storage)
        self.wave_store = wave_store = TableWaveRepository(self.storage, runs.ids)

        @cache
        def builder() -> Builder:
            if settings.builder == "acr":
                from shared.adapters.builders.acr import AcrBuilder

                # Base digests come from the registry API (ACR's run record does not report them).
                return AcrBuilder.from_settings(settings, resolve_digest=registry.resolve_digest)
            from shared.adapters.builders.buildah import BuildahBuilder

            return BuildahBuilder(registry, ca_file=settings.registry_ca, work_dir=settings.work_dir)

        def rebaser() -> Rebaser:
            from shared.adapters.builders.buildah import BuildahBuilder
            from shared.adapters.builders.rebase import RebaseBuilder

            # The rebase check runs the image with buildah, where the builder is buildah.
            checker = builder() if settings.builder == "buildah" else None
            return RebaseBuilder(registry, checker=checker if isinstance(checker, BuildahBuilder) else None)

        super().__init__(Adapters(
            runs=runs,
            task_store=TableTaskRepository(self.storage, SecretBox(settings.secret_key)),
            dependencies=dependencies, index_rows=dependencies,
            decisions=decisions, claims=decisions,
            queue=StorageBuildQueue(self.storage, settings.build_queue),
            backlog=BlobRunBacklog(self.storage),
            logs=BlobRunLogs(self.storage),
            sources=BuildSources(self.storage, settings.unpack_limits, settings.local_context_roots),
            registry=registry, images=registry, image_stores=registry,
            wave_store=wave_store,
            slots=TableSlots(self.storage),
            timer_slots=TableTimerSlots(self.storage),
            quarantine_store=TableQuarantine(self.storage),
            settling_store=TableSettling(self.storage),
            base_states=TableBaseRepository(self.storage),
            outbox=TableNotificationOutbox(self.storage),
            sender=HttpNotificationSender(),
            git=GitLsRemote(),
            heads=TableRepositoryHeads(self.storage),
            builder=builder,
            rebaser=rebaser,
            run_event_topic=self._run_event_topic(settings),
        ), settings)

    def _acr_client(self) -> AcrClient:
        """ACR bases are read with the app's managed identity (the identity the storage uses)."""
        from shared.adapters.credentials import default_credential

        return AcrClient(default_credential(self.settings.storage.client_id), self.settings.acr_audience)

    @staticmethod
    def _run_event_topic(settings: config.Settings) -> RunEventPublisher | None:
        """The Event Grid topic of run events when BASETRIGGER_RUN_EVENTS_TOPIC names one."""
        if not settings.run_events_topic:
            return None
        from shared.adapters.credentials import default_credential
        from shared.adapters.run_event_topic import EventGridRunEventPublisher

        return EventGridRunEventPublisher(settings.run_events_topic,
                                          default_credential(settings.storage.client_id))


@lru_cache(maxsize=1)
def services() -> Services:
    return Services(config.load())
