"""Polling git repositories on fakes: one ls-remote per distinct repository and branch, the first
head a starting point, a moved head one Commit run per task whoever polls and however often (a
restart between deciding and recording included), hosts chosen by BASETRIGGER_GIT_POLL."""

from __future__ import annotations

import pytest

from shared.domain.git_polling import (
    GitPollError,
    GitRemoteError,
    RemoteHead,
    is_polled,
    parse_hosts,
    parse_ls_remote,
)
from shared.domain.tasks import Task
from shared.domain.vocabulary import Trigger
from shared.service_layer.repo_polling import RepositoryPoller
from shared.service_layer.source_triggers import SourceTriggers
from tests.fakes import FakeApp, FakeRepositoryHeads

A, B, C = "a" * 40, "b" * 40, "c" * 40
REPO = "https://git.example.com/o/app.git"


class FakeRemote:
    def __init__(self) -> None:
        self.heads: dict[str | None, str] = {None: A, "main": A, "dev": A}
        self.asked: list[tuple[str, str | None]] = []
        self.down = False

    def head(self, url: str, branch: str | None, token: str | None) -> RemoteHead:
        self.asked.append((url, branch))
        if self.down:
            raise GitRemoteError(f"{url}: could not resolve host")
        return RemoteHead(branch or "main", self.heads[branch])


@pytest.fixture
def app(tmp_path):
    app = FakeApp(tmp_path)
    app.sources.dockerfile = "FROM localhost:5000/base:1\n"
    for name, branch in (("one", "main"), ("two", "main"), ("three", None), ("dev", "dev")):
        app.task_store.create(Task(name=name, images=[f"{name}:{{{{.Run.Commit}}}}"], context=REPO,
                                   branch=branch, commit_trigger_enabled=True))
    app.task_store.create(Task(name="off", images=["off:1"], context=REPO, branch="main"))
    app.remote, app.heads = FakeRemote(), FakeRepositoryHeads()
    return app


def poller(app, hosts=("git.example.com",)) -> RepositoryPoller:
    return RepositoryPoller(app.task_store, app.remote, app.heads, SourceTriggers(app.tasks, app.triggered),
                            tuple(hosts))


def commit_runs(app):
    return sorted((r.task, r.commit) for r in app.runs.all() if r.trigger == Trigger.COMMIT)


def test_one_request_per_repository_and_branch_and_the_first_head_starts_nothing(app):
    report = poller(app).cycle()
    assert sorted(app.remote.asked, key=str) == sorted([(REPO, "main"), (REPO, None), (REPO, "dev")], key=str)
    assert (report.polled, report.first_seen, report.decisions) == (3, 3, [])
    assert commit_runs(app) == []


def test_a_moved_head_runs_each_task_of_that_branch_once_across_cycles_and_instances(app):
    poller(app).cycle()
    app.remote.heads.update({None: B, "main": B})
    first = poller(app).cycle()
    assert {d.event_id: d.outcome for d in first.decisions} == {
        f"gitpoll:git.example.com/o/app@main:{B}:one": "queued",
        f"gitpoll:git.example.com/o/app@main:{B}:two": "queued",
        f"gitpoll:git.example.com/o/app@main:{B}:three": "queued",
        f"gitpoll:git.example.com/o/app@main:{B}:off": "trigger-disabled"}
    poller(app).cycle()  # a second instance, a later cycle: nothing moved since
    assert commit_runs(app) == [("one", B), ("three", B), ("two", B)]


def test_a_restart_between_deciding_and_recording_starts_nothing_again(app):
    poller(app).cycle()
    app.remote.heads.update({"main": C, None: C})
    first = poller(app).cycle()
    app.heads.rows[("git.example.com/o/app", "main")] = A  # as if the record had not been written
    again = poller(app).cycle()
    assert again.decisions == first.decisions[:len(again.decisions)]  # the first decisions, not new ones
    assert commit_runs(app) == [("one", C), ("three", C), ("two", C)]


def test_a_repository_that_cannot_be_asked_keeps_its_head(app):
    poller(app).cycle()
    app.remote.down = True
    report = poller(app).cycle()
    assert report.failed == 3 and not report.decisions
    assert app.heads.rows[("git.example.com/o/app", "main")] == A


def test_only_the_hosts_the_setting_names_are_polled(app):
    assert poller(app, hosts=()).cycle().polled == 0 and not app.remote.asked
    assert poller(app, hosts=("github.com",)).cycle().polled == 0
    assert poller(app, hosts=("*.example.com",)).cycle().polled == 3


def test_hosts_and_ls_remote_output_are_read():
    assert parse_hosts(" git.example.com, *.corp.example ,127.0.0.1:3000") == (
        "git.example.com", "*.corp.example", "127.0.0.1:3000")
    assert parse_hosts("") == ()
    with pytest.raises(GitPollError):
        parse_hosts("https://git.example.com")
    assert is_polled("http://127.0.0.1:3000/a.git", ("127.0.0.1:3000",))
    assert not is_polled("http://127.0.0.1:3001/a.git", ("127.0.0.1:3000",))
    assert is_polled("https://x.corp.example/a.git", ("*.corp.example",)) and is_polled(REPO, ("*",))
    output = f"ref: refs/heads/trunk\tHEAD\n{A}\tHEAD\n"
    assert parse_ls_remote(output, None) == RemoteHead("trunk", A)
    assert parse_ls_remote(f"{B}\trefs/heads/dev\n", "dev") == RemoteHead("dev", B)
    with pytest.raises(GitRemoteError, match="no branch 'dev'"):
        parse_ls_remote("", "dev")
