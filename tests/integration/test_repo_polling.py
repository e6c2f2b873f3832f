"""Polling a repository that sends no webhooks, on a git server over HTTP (tests/git_server.py),
with real `git ls-remote`, Azurite and the registry: the first head starts nothing, a pushed commit
starts one Commit run of it (its changed FROM read at that commit), and neither a later cycle nor
a restarted app (new services, the head kept in its table) starts it again."""

from __future__ import annotations

import os
import uuid

import pytest

from shared.bootstrap import Services
from shared.domain.tasks import Task
from shared.domain.vocabulary import Trigger
from tests.conftest import unique_settings
from tests.git_server import bare_repository, commit_file, git_http_server
from tests.integration.buildah_tools import push_base


@pytest.fixture
def settings():
    settings = unique_settings(BASETRIGGER_GIT_POLL="127.0.0.1")
    yield settings
    Services(settings).storage.drop_all()


def commit_runs(services: Services, task: str) -> list[tuple[str | None, str | None]]:
    return [(r.trigger, r.commit) for r in services.runs.newest(top=50, task=task)[0]
            if r.trigger == Trigger.COMMIT]


def test_a_pushed_commit_is_polled_into_one_run_across_cycles_and_restarts(settings, tmp_path):
    registry = os.environ.get("REGISTRY", "localhost:5000")
    name = f"gp{uuid.uuid4().hex[:8]}"
    first_base, second_base = f"{registry}/{name}/base:1", f"{registry}/{name}/other:1"
    push_base(tmp_path, first_base, "one")
    push_base(tmp_path, second_base, "two")
    root, work = bare_repository(tmp_path)
    commit_file(work, "Dockerfile", f"FROM {first_base}\n", "first")
    with git_http_server(root) as server:
        services = Services(settings)
        services.tasks.create(Task(name=name, images=[f"{name}/app:{{{{.Run.Commit}}}}"],
                                   context=f"{server}/app.git", commit_trigger_enabled=True))
        first = services.repository_poller.cycle()
        assert (first.polled, first.first_seen, first.failed, first.decisions) == (1, 1, 0, [])

        second = commit_file(work, "Dockerfile", f"FROM {second_base}\n", "move")
        moved = services.repository_poller.cycle()
        (decision,) = moved.decisions
        assert decision.outcome == "queued" and decision.event_id.endswith(f":{second}:{name}")
        assert services.repository_poller.cycle().decisions == []  # nothing moved since

        restarted = Services(settings)  # a new process: only the tables remember
        assert restarted.repository_poller.cycle().decisions == []
        assert commit_runs(restarted, name) == [(Trigger.COMMIT, second)]
        (run,) = [r for r in restarted.runs.newest(top=5, task=name)[0]]
        assert run.branch == "main" and run.output_images == [f"{registry}/{name}/app:{second}"]
        task = restarted.tasks.get(name)
        assert [d.image for d in task.dependencies] == [second_base]  # read at the polled commit
