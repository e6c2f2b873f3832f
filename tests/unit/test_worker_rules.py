"""The worker's rules on in-memory fakes: every end state of a run, redelivery and takeover."""

import base64
import gzip
import io
import tarfile
import threading
from dataclasses import replace
from datetime import timedelta

import pytest

from shared.domain.builds import BuildResult, ContextTooLarge, UnpackLimits, check_archive
from shared.domain.runs import Run
from shared.domain.tasks import Dependency, Task
from shared.domain.vocabulary import RunStatus, Trigger, utc_now
from shared.service_layer.runs import transition
from shared.service_layer.worker import RetryLater
from tests.fakes import FakeApp

REGISTRY = "localhost:5000"
BASE = f"{REGISTRY}/base:1"
OLD, NEW = "sha256:" + "0" * 64, "sha256:" + "1" * 64


@pytest.fixture
def app(tmp_path):
    app = FakeApp(tmp_path, REGISTRY)
    app.sources.dockerfile = f"FROM {BASE}\nRUN true\n"
    task = Task(name="app", images=["app:{{.Run.ID}}"], context="/ctx", secret_args={"TOKEN": "s3cr3t"},
                dependencies=[Dependency(BASE, OLD, True)])
    app.task_store.create(task)
    app.index.sync_task(task, previous=[])
    return app


def queue_manual_run(app) -> str:
    return app.scheduler.run_task("app").run_id


def test_a_successful_build_records_the_run_and_what_it_was_built_on(app):
    app.builder.result = BuildResult(RunStatus.SUCCEEDED, output_digest="sha256:" + "a" * 64,
                                     base_digests={BASE: NEW})
    run = app.worker.execute(queue_manual_run(app))
    assert run.status == RunStatus.SUCCEEDED and run.base_digests == {BASE: NEW}
    assert run.attempt == 1 and run.finished_at is not None
    assert app.task_store.get("app").dependencies == [Dependency(BASE, NEW, True)]
    assert app.table.get(BASE, "app").built_digest == NEW
    request = app.builder.requests[0]
    assert request.base_images == [BASE] and request.secret_args == {"TOKEN": "s3cr3t"}


def test_secrets_never_reach_the_log(app):
    run_id = queue_manual_run(app)
    original = app.builder.build

    def build_that_prints_the_secret(request, log):
        log("echo s3cr3t")
        return original(request, log)

    app.builder.build = build_that_prints_the_secret
    app.worker.execute(run_id)
    assert "s3cr3t" not in app.logs.read(run_id).decode()
    assert "echo ***" in app.logs.read(run_id).decode()


@pytest.mark.parametrize("status", [RunStatus.FAILED, RunStatus.TIMEOUT, RunStatus.CANCELED, RunStatus.ERROR])
def test_a_build_that_does_not_succeed_ends_in_its_status_and_leaves_the_task_alone(app, status):
    app.builder.result = BuildResult(status, reason=f"it {status}")
    run = app.worker.execute(queue_manual_run(app))
    assert (run.status, run.reason) == (status, f"it {status}")
    assert app.task_store.get("app").dependencies == [Dependency(BASE, OLD, True)]


def test_a_run_of_a_deleted_task_fails_with_the_reason(app):
    run_id = queue_manual_run(app)
    app.tasks.delete("app")
    run = app.worker.execute(run_id)
    assert run.status == RunStatus.FAILED and "deleted" in run.reason
    assert not app.builder.requests


def test_an_unreadable_context_fails_the_run_and_says_why_in_the_log(app):
    app.sources.unreadable = True
    run_id = queue_manual_run(app)
    run = app.worker.execute(run_id)
    assert run.status == RunStatus.FAILED and "cannot clone" in run.reason
    assert "error: cannot clone" in app.logs.read(run_id).decode()


def test_a_cancel_during_the_build_stands(app):
    run_id = queue_manual_run(app)
    app.builder.during = lambda request: app.scheduler.cancel(run_id)
    run = app.worker.execute(run_id)
    assert run.status == RunStatus.CANCELED and run.reason == "canceled by request"


def test_a_crash_releases_the_run_for_the_next_delivery_which_takes_it_over(app):
    run_id = queue_manual_run(app)
    app.builder.crash = OSError("disk full")
    with pytest.raises(OSError):
        app.worker.execute(run_id)
    run, _ = app.runs.get(run_id)
    assert run.status == RunStatus.RUNNING and run.heartbeat_at is None and "crashed" in run.reason
    app.builder.crash = None
    run = app.worker.execute(run_id)
    assert (run.status, run.attempt) == (RunStatus.SUCCEEDED, 2)


def test_a_run_with_a_fresh_heartbeat_is_left_to_its_worker(app):
    run_id = queue_manual_run(app)
    transition(app.runs, run_id, lambda r: replace(r, status=RunStatus.RUNNING, attempt=1,
                                                   heartbeat_at=utc_now()))
    with pytest.raises(RetryLater):
        app.worker.execute(run_id)


def test_a_taken_over_run_keeps_the_new_worker_outcome(app):
    run_id = queue_manual_run(app)

    def taken_over(request):
        transition(app.runs, run_id, lambda r: replace(r, attempt=r.attempt + 1))

    app.builder.during = taken_over
    app.builder.result = BuildResult(RunStatus.FAILED, reason="stale worker")
    run = app.worker.execute(run_id)
    assert run.status == RunStatus.RUNNING and run.attempt == 2


def test_the_builder_run_is_kept_on_the_record_and_followed_by_the_attempt_that_takes_over(app):
    """An ACR run's id is saved as soon as the builder has it; the next attempt is handed it (to
    reattach) instead of starting a second build that would push too."""
    run_id = queue_manual_run(app)
    app.builder.during = lambda request: request.record_builder_run("cb7")
    app.builder.crash = OSError("worker lost")
    with pytest.raises(OSError):
        app.worker.execute(run_id)
    assert app.runs.get(run_id)[0].builder_run_id == "cb7"
    assert app.builder.requests[0].builder_run_id is None

    app.builder.crash, app.builder.during = None, None
    run = app.worker.execute(run_id)
    assert (run.status, run.attempt, run.builder_run_id) == (RunStatus.SUCCEEDED, 2, "cb7")
    assert app.builder.requests[1].builder_run_id == "cb7"


def test_a_builder_run_started_after_a_takeover_is_not_recorded(app):
    run_id = queue_manual_run(app)
    answers = []

    def taken_over_then_scheduled(request):
        transition(app.runs, run_id, lambda r: replace(r, attempt=r.attempt + 1))
        answers.append(request.record_builder_run("cb9"))

    app.builder.during = taken_over_then_scheduled
    app.worker.execute(run_id)
    assert answers == [False]  # the builder cancels its run
    assert app.runs.get(run_id)[0].builder_run_id is None


def test_a_redelivery_of_a_finished_run_does_nothing(app):
    run_id = queue_manual_run(app)
    app.worker.execute(run_id)
    assert app.worker.execute(run_id) is None
    assert len(app.builder.requests) == 1


def test_a_message_for_an_unknown_run_is_dropped(app):
    assert app.worker.execute("da404") is None


def test_the_poison_handler_fails_a_run_no_worker_holds(app):
    run_id = queue_manual_run(app)
    run = app.lifecycle.fail_abandoned(run_id, "every delivery failed")
    assert run.status == RunStatus.FAILED and run.reason == "every delivery failed"
    assert app.lifecycle.fail_abandoned(run_id, "again") is None


def test_housekeeping_fails_silent_runs_and_resends_lost_messages(app):
    long_ago = utc_now() - timedelta(minutes=30)
    silent, lost = app.lifecycle.allocate(2)
    app.runs.create_many([
        Run(silent, RunStatus.RUNNING, Trigger.MANUAL, started_at=long_ago, heartbeat_at=long_ago, attempt=1),
        Run(lost, RunStatus.QUEUED, Trigger.MANUAL, created_at=long_ago),
    ])
    assert app.lifecycle.sweep() == [silent]
    assert app.runs.get(silent)[0].status == RunStatus.FAILED
    assert app.queue.sent == [lost]


def tar_gz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_a_quick_build_builds_its_upload_with_its_own_spec(app):
    archive = tar_gz({"Dockerfile": b"FROM scratch\n"})
    run = app.scheduler.quick_build(["tool:{{.Run.ID}}"], base64.b64encode(archive).decode(),
                                    build_args={"V": "1"})
    assert list(app.sources.uploads.values()) == [archive]
    finished = app.worker.execute(run.run_id)
    assert finished.status == RunStatus.SUCCEEDED and finished.task is None
    assert app.builder.requests[0].build_args == {"V": "1"}
    assert app.builder.requests[0].images == [f"{REGISTRY}/tool:{run.run_id}"]


def test_an_upload_that_would_unpack_too_far_is_refused_before_a_run_exists(app):
    zeros = tarfile.TarInfo("zeros")
    zeros.size = 600 * 1024 * 1024  # more than the default 512 MiB; only its header is needed
    bomb = gzip.compress(zeros.tobuf() + bytes(4096))
    with pytest.raises(ContextTooLarge, match="512 MiB"):
        app.scheduler.quick_build(["tool:{{.Run.ID}}"], base64.b64encode(bomb).decode())
    many = tar_gz({f"f{n}": b"" for n in range(5)})
    small = UnpackLimits(max_bytes=1024, max_files=4)
    with pytest.raises(ContextTooLarge, match="more than 4 files"):
        check_archive(many, small)
    assert app.runs.all() == [] and app.sources.uploads == {}


def test_a_heartbeat_never_lands_after_the_crash_handler_cleared_it(app):
    """A beat that read the run before a crash must not write a fresh heartbeat over the crash
    handler's clear: the next delivery would take it for a live worker ("being built by another
    worker") and the run would stay Running until housekeeping failed it."""
    run_id = queue_manual_run(app)
    builder_thread = threading.current_thread()
    beating, crashed, cleared = threading.Event(), threading.Event(), threading.Event()
    get, save = app.runs.get, app.runs.save

    def held_get(wanted: str):
        if threading.current_thread() is not builder_thread and not crashed.is_set():
            beating.set()
            crashed.wait()  # a beat in flight while the build crashes
        return get(wanted)

    def ordered_save(run, etag):
        if threading.current_thread() is not builder_thread:
            # Without a join the crash handler's clear goes first; with one, this beat ends first.
            cleared.wait(timeout=1)
        written = save(run, etag)
        if threading.current_thread() is builder_thread and run.heartbeat_at is None:
            cleared.set()
        return written

    def crash(request, log):
        beating.wait()
        crashed.set()
        raise OSError("storage went away")

    app.runs.get, app.runs.save = held_get, ordered_save
    app.builder.build = crash
    with pytest.raises(OSError):
        app.worker.execute(run_id)
    for thread in [t for t in threading.enumerate() if "_heartbeat" in t.name]:
        thread.join(timeout=10)
    run, _ = get(run_id)
    assert run.status == RunStatus.RUNNING and run.heartbeat_at is None, run
    app.runs.get, app.runs.save = get, save
    app.builder.build = lambda request, log: BuildResult(RunStatus.SUCCEEDED)
    assert app.worker.execute(run_id).status == RunStatus.SUCCEEDED  # the next delivery takes it over


def test_housekeeping_sends_a_message_a_failed_send_left_unsent_within_a_minute_and_only_that(app):
    sent_run, unsent_run = queue_manual_run(app), queue_manual_run(app)
    assert app.queue.sent == [sent_run, unsent_run]
    app.queue.sent.clear()
    # The send of one failed (storage down) a minute ago; the other's message waits in the queue.
    transition(app.runs, unsent_run, lambda r: replace(r, unsent_since=utc_now() - timedelta(seconds=61)))
    app.queue.is_empty = lambda: False
    app.lifecycle.sweep()
    assert app.queue.sent == [unsent_run]
    assert app.runs.get(unsent_run)[0].unsent_since is None
    app.lifecycle.sweep()
    assert app.queue.sent == [unsent_run]  # sent once


def test_housekeeping_has_a_run_whose_worker_died_taken_over_within_a_minute(app):
    run_id = queue_manual_run(app)
    app.queue.sent.clear()
    silent = utc_now() - timedelta(seconds=61)
    transition(app.runs, run_id, lambda r: replace(r, status=RunStatus.RUNNING, attempt=1,
                                                   started_at=silent, heartbeat_at=silent))
    app.queue.is_empty = lambda: False  # its message may still come back (in flight): no second one
    app.lifecycle.sweep()
    assert app.queue.sent == []
    app.queue.is_empty = lambda: True  # none will: a new one, and a worker takes the run over
    app.lifecycle.sweep()
    assert app.queue.sent == [run_id]
    run = app.worker.execute(run_id)
    assert run.status == RunStatus.SUCCEEDED and run.attempt == 2


def test_a_secret_read_through_arg_is_warned_about_in_the_run_log(app):
    """Secret args are build secrets only: an `ARG TOKEN` gets nothing, and the log says so."""
    app.sources.dockerfile = f"FROM {BASE}\nARG TOKEN\nRUN --mount=type=secret,id=TOKEN true\n"
    run_id = queue_manual_run(app)
    app.worker.execute(run_id)
    log = app.logs.read(run_id).decode()
    assert "warning: secret arg TOKEN is declared as `ARG TOKEN` (Dockerfile line 2)" in log
    assert "RUN --mount=type=secret,id=TOKEN" in log


def test_a_secret_read_as_a_build_secret_gets_no_warning(app):
    app.sources.dockerfile = f"FROM {BASE}\nARG PLAIN\nRUN --mount=type=secret,id=TOKEN true\n"
    run_id = queue_manual_run(app)
    app.worker.execute(run_id)
    assert "warning" not in app.logs.read(run_id).decode()


def test_a_task_whose_dockerfile_reads_a_secret_through_arg_shows_a_warning(app, tmp_path):
    app.sources.dockerfile = f"FROM {BASE}\nARG KEY\nARG PLAIN\nRUN true\n"
    created = app.tasks.create(Task(name="argsecret", images=["a:1"], context=str(tmp_path),
                                    build_args={"PLAIN": "p"}, secret_args={"KEY": "k3y"}))
    shown = app.task_store.get("argsecret").public_dict()  # what `task show` and the API answer
    assert created.warnings == shown["warnings"] and len(shown["warnings"]) == 1
    assert shown["warnings"][0].startswith("secret arg KEY is declared as `ARG KEY` (Dockerfile line 2)")
    updated = app.tasks.update("argsecret", secret_args={"OTHER": "o"})
    assert updated.warnings == [] and app.task_store.get("argsecret").warnings == []
