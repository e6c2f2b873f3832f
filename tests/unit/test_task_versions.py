"""Conditional changes of tasks (HTTP If-Match), on the fakes: a change or delete names the versions
it accepts; a task at another version is refused before any work (TaskChanged, with the version
stored now), and a change landing between the service's read and its write is refused by the
store's conditional write, not by a compare in between. A change never brings back a task deleted
meanwhile, and a credential change made at the same time as another is not lost. The Azurite and
host tests (tests/integration/test_task_versions.py) do the same for real.
"""

from collections.abc import Callable

import pytest

from shared.domain.credentials import RegistryCredential
from shared.domain.tasks import ExpectedVersion, Task, TaskChanged, TaskNotFound
from shared.service_layer.credentials import TaskCredentials
from tests.fakes import FakeApp, FakeRegistry
from tests.unit.test_context_uploads import ELSEWHERE, archive

REGISTRY = "localhost:5000"
BASE = f"{REGISTRY}/base:1"
ANY = ExpectedVersion(any_version=True)


@pytest.fixture
def app(tmp_path):
    app = FakeApp(tmp_path, REGISTRY)
    app.sources.dockerfile = f"FROM {BASE}\n"
    app.tasks.create(Task(name="app", images=["app:1"], context=ELSEWHERE), context_archive=archive("v1"))
    return app


def at(etag: str | None) -> ExpectedVersion:
    assert etag
    return ExpectedVersion(etags=frozenset({etag}))


class MeanwhileRegistry(FakeRegistry):
    """Runs `meanwhile` once, while the service reads the bases: after its read of the task and
    before its write, as another request racing it would."""

    def __init__(self, meanwhile: Callable[[], object]):
        super().__init__()
        self.meanwhile: Callable[[], object] | None = meanwhile

    def resolve_digest(self, reference, platform=None, credentials=()):
        if self.meanwhile:
            action, self.meanwhile = self.meanwhile, None
            action()
        return super().resolve_digest(reference, platform, credentials)


def test_every_read_and_write_gives_the_version_and_each_write_a_new_one(app):
    read = app.tasks.get("app")
    assert read.etag and [t.etag for t in app.tasks.all()] == [read.etag]
    changed = app.tasks.update("app", expected=at(read.etag), platform="linux/arm64")
    assert changed.etag not in (None, read.etag) and app.tasks.get("app").etag == changed.etag
    app.tasks.record_build(changed, [])  # a build's dependencies are a change too
    assert app.tasks.get("app").etag != changed.etag


def test_a_change_from_an_old_version_is_refused_and_changes_nothing(app):
    old = app.tasks.get("app")
    newer = app.tasks.update("app", platform="linux/arm64")
    uploads = dict(app.sources.uploads)

    with pytest.raises(TaskChanged) as refused:
        app.tasks.update("app", expected=at(old.etag), images=["other:1"], context=ELSEWHERE,
                         context_archive=archive("v2"))

    assert refused.value.etag == newer.etag
    assert app.tasks.get("app") == newer and app.tasks.get("app").etag == newer.etag
    assert app.sources.uploads == uploads  # the refused request's archive is not kept


def test_any_version_accepts_whatever_is_stored_but_not_a_missing_task(app):
    app.tasks.update("app", platform="linux/arm64")
    assert app.tasks.update("app", expected=ANY, images=["b:1"]).images == ["b:1"]
    app.tasks.delete("app", expected=ANY)
    with pytest.raises(TaskNotFound):
        app.tasks.update("app", expected=ANY, images=["c:1"])


def test_two_changes_from_the_same_version_never_both_succeed(app):
    read = app.tasks.get("app")
    # The second request reads the task, then the first writes, then the second writes.
    first = {}
    app.tasks.registry = MeanwhileRegistry(
        lambda: first.setdefault("task", app.tasks.update("app", expected=at(read.etag), images=["first:1"])))

    with pytest.raises(TaskChanged) as refused:
        app.tasks.update("app", expected=at(read.etag), images=["second:1"], context=ELSEWHERE,
                         context_archive=archive("v2"))

    stored = app.tasks.get("app")
    assert stored.images == ["first:1"] and refused.value.etag == stored.etag == first["task"].etag
    assert list(app.sources.uploads) == [stored.context_upload]  # the loser's archive is removed


@pytest.mark.parametrize("conditional", [True, False], ids=["if-match", "no-if-match"])
def test_a_change_racing_a_delete_does_not_bring_the_task_back(app, conditional):
    read = app.tasks.get("app")
    app.tasks.registry = MeanwhileRegistry(lambda: app.tasks.delete("app"))

    with pytest.raises((TaskNotFound, TaskChanged)):
        app.tasks.update("app", expected=at(read.etag) if conditional else None, images=["x:1"],
                         context=ELSEWHERE, context_archive=archive("v2"))

    with pytest.raises(TaskNotFound):
        app.tasks.get("app")
    assert app.table.rows == {} and app.sources.uploads == {}


def test_a_delete_from_an_old_version_is_refused_and_the_task_stays_indexed(app):
    old = app.tasks.get("app")
    newer = app.tasks.update("app", platform="linux/arm64")
    rows = dict(app.table.rows)

    with pytest.raises(TaskChanged) as refused:
        app.tasks.delete("app", expected=at(old.etag))

    assert refused.value.etag == newer.etag and app.tasks.get("app") == newer
    assert app.table.rows.keys() == rows.keys() and app.sources.uploads

    app.tasks.delete("app", expected=at(newer.etag))
    with pytest.raises(TaskNotFound):
        app.tasks.get("app")


def test_a_delete_losing_a_race_to_a_change_keeps_the_task_and_its_index(app, monkeypatch):
    read = app.tasks.get("app")
    forget = app.index.forget_task

    def forget_then_someone_changes_it(task):
        forget(task)
        app.tasks.update("app", platform="linux/arm64")  # lands between the delete's read and write

    monkeypatch.setattr(app.index, "forget_task", forget_then_someone_changes_it)
    with pytest.raises(TaskChanged):
        app.tasks.delete("app", expected=at(read.etag))

    assert app.tasks.get("app").platform == "linux/arm64"
    assert [(base, task) for base, task in app.table.rows] == [(BASE, "app")]


def test_two_credential_changes_at_once_both_stay(app):
    """A credential change edits the list as read: one made meanwhile is read again, not lost."""
    credentials = TaskCredentials(app.tasks)
    app.tasks.registry = MeanwhileRegistry(
        lambda: credentials.add("app", RegistryCredential.create("b.example.com", "bob", "pw-b")))

    credentials.add("app", RegistryCredential.create("a.example.com", "alice", "pw-a"))

    assert [c.login_server for c in credentials.list("app")] == ["b.example.com", "a.example.com"]
