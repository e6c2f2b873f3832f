"""Task context uploads are deleted once no task names them (on the fakes): an update that replaces
or drops one, a task's delete, a refused request's new archive; never before the task record stops
naming it, and a run that read the old name builds the task as it is now. A quick build's upload
is deleted once its run has finished (never while a delivery may still build from it)."""

import base64
import io
import tarfile

import pytest

from shared.domain.builds import BuildResult, Source
from shared.domain.tasks import Task, TaskError, TaskExists
from shared.domain.vocabulary import RunStatus
from tests.fakes import FakeApp

REGISTRY = "localhost:5000"
BASE = f"{REGISTRY}/base:1"
ELSEWHERE = "/home/someone/app"  # the client's directory: not here, so the archive is uploaded


def archive(text: str) -> str:
    data = text.encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        member = tarfile.TarInfo("Dockerfile")
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data))
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture
def app(tmp_path):
    app = FakeApp(tmp_path, REGISTRY)
    app.sources.dockerfile = f"FROM {BASE}\n"
    return app


def create(app, name: str = "app") -> Task:
    return app.tasks.create(Task(name=name, images=[f"{name}:1"], context=ELSEWHERE),
                            context_archive=archive("v1"))


def test_an_update_with_a_new_archive_deletes_the_one_it_replaced(app):
    first = create(app).context_upload
    assert first in app.sources.uploads

    second = app.tasks.update("app", context=ELSEWHERE, context_archive=archive("v2")).context_upload

    assert second not in (None, first)
    assert app.task_store.get("app").context_upload == second
    assert list(app.sources.uploads) == [second]


def test_an_update_that_leaves_the_context_keeps_the_upload(app):
    upload = create(app).context_upload
    app.tasks.update("app", platform="linux/arm64")
    assert app.task_store.get("app").context_upload == upload and list(app.sources.uploads) == [upload]


def test_a_switch_to_a_git_context_deletes_the_upload(app):
    create(app)
    moved = app.tasks.update("app", context="https://example.com/app.git", branch="main")
    assert moved.context_upload is None and app.task_store.get("app").context_upload is None
    assert app.sources.uploads == {}


def test_deleting_a_task_deletes_its_upload(app):
    create(app)
    create(app, "other")
    kept = app.task_store.get("other").context_upload
    app.tasks.delete("app")
    assert list(app.sources.uploads) == [kept]


def test_deleting_an_upload_again_is_no_error(app):
    upload = create(app).context_upload
    app.sources.remove(upload)  # a retried request deleted it already
    app.sources.remove(upload)
    app.sources.remove("task-never-uploaded.tar.gz")
    app.tasks.delete("app")
    assert app.sources.uploads == {}


def test_the_old_upload_is_deleted_only_once_the_task_names_the_new_one(app):
    first = create(app).context_upload
    named_at_removal = []
    remove = app.sources.remove

    def remove_and_look(name):
        named_at_removal.append((name, app.task_store.get("app").context_upload))
        remove(name)

    app.sources.remove = remove_and_look
    second = app.tasks.update("app", context=ELSEWHERE, context_archive=archive("v2")).context_upload
    assert named_at_removal == [(first, second)]


def test_a_delete_that_fails_leaves_an_orphan_not_a_failed_update(app):
    first = create(app).context_upload

    def storage_down(name):
        raise OSError("blob storage unreachable")

    app.sources.remove = storage_down
    second = app.tasks.update("app", context=ELSEWHERE, context_archive=archive("v2")).context_upload
    assert app.task_store.get("app").context_upload == second
    assert set(app.sources.uploads) == {first, second}  # the first is an orphan, nothing points at it


def test_a_refused_update_keeps_the_task_upload_and_drops_its_new_archive(app):
    first = create(app).context_upload
    app.sources.unreadable = True  # the new archive cannot be read: the update is refused
    with pytest.raises(TaskError):
        app.tasks.update("app", context=ELSEWHERE, context_archive=archive("v2"))
    assert app.task_store.get("app").context_upload == first and list(app.sources.uploads) == [first]


def test_a_refused_create_keeps_no_upload(app):
    first = create(app).context_upload
    with pytest.raises(TaskExists):
        create(app)
    assert list(app.sources.uploads) == [first]


def test_a_queued_run_builds_the_archive_the_task_names_when_it_starts(app):
    create(app)
    run_id = app.scheduler.run_task("app").run_id
    second = app.tasks.update("app", context=ELSEWHERE, context_archive=archive("v2")).context_upload
    app.sources.checkouts.clear()  # those of create and update (they read the Dockerfile)

    run = app.worker.execute(run_id)

    assert run.status == RunStatus.SUCCEEDED, run.reason
    assert app.sources.checkouts == [Source(upload=second)]


def test_a_run_that_read_the_task_just_before_its_archive_was_replaced_builds_the_new_one(app):
    first = create(app).context_upload
    run_id = app.scheduler.run_task("app").run_id
    checkout = app.sources.checkout
    replaced = []

    def replaced_meanwhile(spec, workspace):
        if not replaced:  # between the worker's read of the task and its download
            replaced.append(None)
            replaced[0] = app.tasks.update("app", context=ELSEWHERE, context_archive=archive("v2"))
            app.sources.checkouts.clear()  # the update's own
        return checkout(spec, workspace)

    app.sources.checkout = replaced_meanwhile
    run = app.worker.execute(run_id)

    second = replaced[0].context_upload
    assert run.status == RunStatus.SUCCEEDED and run.attempt == 1, run.reason
    assert first not in app.sources.uploads
    assert app.sources.checkouts == [Source(upload=first), Source(upload=second)]
    assert len(app.builder.requests) == 1
    assert "reading it again" in app.logs.read(run_id).decode()


def test_a_task_run_whose_archive_is_lost_fails_with_the_reason(app):
    upload = create(app).context_upload
    app.sources.remove(upload)  # e.g. deleted by hand: the task still names it
    run = app.worker.execute(app.scheduler.run_task("app").run_id)
    assert run.status == RunStatus.FAILED and "is gone" in run.reason and "--context" in run.reason
    assert app.builder.requests == []


def quick_build(app) -> tuple[str, str]:
    run = app.scheduler.quick_build(["quick:{{.Run.ID}}"], archive(f"FROM {BASE}\n"))
    return run.run_id, run.spec.source.upload


def test_a_finished_quick_build_deletes_its_upload(app):
    run_id, upload = quick_build(app)
    assert upload in app.sources.uploads
    run = app.worker.execute(run_id)
    assert run.status == RunStatus.SUCCEEDED and app.sources.uploads == {}
    assert app.worker.execute(run_id) is None  # a redelivery: nothing to build, nothing fails


def test_a_failed_quick_build_deletes_its_upload(app):
    app.builder.result = BuildResult(RunStatus.FAILED, reason="RUN false")
    run_id, _ = quick_build(app)
    assert app.worker.execute(run_id).status == RunStatus.FAILED and app.sources.uploads == {}


def test_a_quick_build_that_crashed_keeps_its_upload_for_the_next_delivery(app):
    run_id, upload = quick_build(app)
    app.builder.crash = OSError("disk full")
    with pytest.raises(OSError):
        app.worker.execute(run_id)
    assert upload in app.sources.uploads
    app.builder.crash = None
    assert app.worker.execute(run_id).status == RunStatus.SUCCEEDED and app.sources.uploads == {}


def test_a_quick_build_canceled_before_it_started_deletes_its_upload_when_its_message_comes(app):
    run_id, upload = quick_build(app)
    app.scheduler.cancel(run_id)
    assert upload in app.sources.uploads  # the message is still in the queue
    assert app.worker.execute(run_id) is None and app.sources.uploads == {}


def test_a_quick_build_failed_by_the_poison_handler_deletes_its_upload(app):
    run_id, _ = quick_build(app)
    assert app.lifecycle.fail_abandoned(run_id, "every delivery failed") is not None
    assert app.sources.uploads == {}


def test_a_task_run_leaves_its_task_upload(app):
    upload = create(app).context_upload
    assert app.worker.execute(app.scheduler.run_task("app").run_id).status == RunStatus.SUCCEEDED
    assert list(app.sources.uploads) == [upload]
