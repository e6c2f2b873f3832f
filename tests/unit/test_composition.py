"""One composition root: the unit tests' FakeApp is shared.bootstrap's ServiceLayer on the fakes,
so it has every service the app has, wired the same way."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

from shared.bootstrap import ServiceLayer, Services
from shared.domain.events import ImagePushed
from shared.domain.tasks import Dependency, Task
from shared.domain.vocabulary import EventSource, Outcome
from tests.fakes import FakeApp

REGISTRY = "localhost:5000"
BASE = f"{REGISTRY}/base:1"
OLD, NEW = "sha256:" + "0" * 64, "sha256:" + "1" * 64


def _services_of(cls: type) -> set[str]:
    return {name for klass in cls.__mro__ for name, member in vars(klass).items()
            if isinstance(member, cached_property)}


def test_the_fakes_app_has_every_service_the_app_has(tmp_path: Path) -> None:
    assert _services_of(FakeApp) == _services_of(Services)
    app = FakeApp(tmp_path, REGISTRY)
    for name in sorted(_services_of(ServiceLayer)):
        assert getattr(app, name) is not None, name  # each one builds on the fakes alone


def test_a_push_through_ingest_on_the_fakes_queues_the_dependent(tmp_path: Path) -> None:
    app = FakeApp(tmp_path, REGISTRY)
    task = Task(name="app", images=["app:{{.Run.ID}}"], context="/ctx",
                dependencies=[Dependency(BASE, OLD, True)])
    app.task_store.create(task)
    app.index.sync_task(task, previous=[])
    push = ImagePushed("e1", REGISTRY, "base", "1", NEW, datetime.now(UTC), EventSource.DISTRIBUTION)
    (decision,) = app.ingest.receive([push])
    assert decision.outcome == Outcome.QUEUED and app.queue.sent == decision.runs == ["da1"]
    # The staleness report reads the same fakes: the pushed digest, as the registry now serves it,
    # is not the one the task built on (its run is only queued).
    app.registry.digests[BASE] = NEW
    entries, _ = app.staleness.report()
    assert [(e.task, e.base, e.state, e.current_digest) for e in entries] == [("app", BASE, "stale", NEW)]
