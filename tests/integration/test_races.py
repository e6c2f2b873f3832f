"""Races against a real Azurite (issue 21, item 4): two tasks that close a cycle created at the same
moment, and identical `base rebuild` calls at the same moment."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest

from shared.domain.events import ImagePushed
from shared.domain.tasks import GraphChanged, Task, TaskChanged, TaskError, TaskNotFound
from shared.domain.vocabulary import EventSource, Outcome

TRIES = 8


def test_two_tasks_closing_a_cycle_created_at_once_are_never_both_accepted(services, tmp_path):
    registry = services.settings.registry_host
    accepted_both = 0
    for n in range(TRIES):
        a, b = f"cyc{n}a", f"cyc{n}b"
        tasks = []
        for me, other in ((a, b), (b, a)):
            context = tmp_path / me
            context.mkdir()
            (context / "Dockerfile").write_text(f"FROM {registry}/{other}/out:1\n")
            tasks.append(Task(name=me, images=[f"{registry}/{me}/out:1"], context=str(context)))
        start = threading.Barrier(2)

        def create(task: Task, start: threading.Barrier = start) -> bool:
            start.wait()
            try:
                services.tasks.create(task)
            except TaskError as exc:
                assert "cycle" in str(exc)
                return False
            return True

        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(create, tasks))
        accepted_both += all(results)
        assert any(results), "one of the two is accepted"
    assert accepted_both == 0, f"both tasks of a cycle accepted in {accepted_both} of {TRIES} tries"


def test_identical_base_rebuilds_at_once_make_one_run_per_task_and_burn_no_run_id(services, tmp_path):
    registry = services.settings.registry_host
    base = f"{registry}/rebuildrace{uuid.uuid4().hex[:6]}/base:1"
    names = []
    for n in range(3):
        context = tmp_path / f"t{n}"
        context.mkdir()
        (context / "Dockerfile").write_text(f"FROM {base}\n")
        services.tasks.create(Task(name=f"rb{n}", images=[f"rb{n}:{{{{.Run.ID}}}}"], context=str(context)))
        names.append(f"rb{n}")
    (before,) = services.runs.allocate(1)
    digest = "sha256:" + "c" * 64
    repository = base.split("/", 1)[1].split(":")[0]

    def rebuild(_: int):
        event = ImagePushed(f"rebuild-{uuid.uuid4()}", registry, repository, "1", digest,
                            datetime.now(UTC), EventSource.REBUILD)
        return services.dispatcher.rebuild(event)

    with ThreadPoolExecutor(6) as pool:
        decisions = list(pool.map(rebuild, range(6)))
    (after,) = services.runs.allocate(1)
    runs = [r for name in names for r in services.runs.newest(task=name, top=50)[0]]
    assert sorted(r.task for r in runs) == names, [(r.run_id, r.task) for r in runs]  # one run per task
    burnt = services.runs.ids.counter(after) - services.runs.ids.counter(before) - 1 - len(runs)
    assert burnt == 0
    assert sum(d.outcome == Outcome.QUEUED for d in decisions) == 1, [d.reason for d in decisions]


def test_a_write_checked_against_the_graph_still_honours_the_tasks_own_version(services):
    """The graph version and the task's etag are checked in one transaction on Azurite: a stale
    task version is TaskChanged (412), a stale graph is GraphChanged (checked again), and a
    change never brings back a task deleted meanwhile."""
    repo = services.task_store
    task = Task(name="versioned", images=["versioned:1"], context="/x")
    _, version = repo.graph()
    first = repo.create(task, graph_version=version)
    _, version = repo.graph()
    second = repo.save(task, etag=first, graph_version=version)
    _, version = repo.graph()
    with pytest.raises(TaskChanged) as changed:
        repo.save(task, etag=first, graph_version=version)
    assert changed.value.etag == second
    with pytest.raises(GraphChanged):
        repo.save(task, etag=second, graph_version=first)  # a version the graph row never had
    repo.delete("versioned")
    _, version = repo.graph()
    with pytest.raises(TaskNotFound):
        repo.save(task, graph_version=version)
    assert repo.all() == []
