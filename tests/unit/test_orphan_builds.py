"""A run ended while no worker follows it has its builder's build (an ACR run) canceled too.

The ACR run an attempt scheduled is named on the run record (`builder_run_id`). A worker that
follows the run cancels it itself when it sees the cancel; these are the paths where no worker may
be left to do so: housekeeping failing a silent run, the poison handler, a cancel by request and a
wave's cancel. Each cancels through the builder port once, best effort: a builder that cannot (or
that crashes) never fails the caller, and the run's reason says the build may still push.
On the fakes of tests/fakes.py; the ACR side of `cancel(run)` is tested through the management
client's transport in tests/unit/test_acr_builder.py.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from shared.domain.runs import Run
from shared.domain.tasks import Dependency, Task
from shared.domain.vocabulary import RunStatus, Trigger, utc_now
from shared.service_layer.runs import transition
from tests.fakes import FakeApp

REGISTRY = "localhost:5000"
BASE = f"{REGISTRY}/base:1"
MAY_STILL_PUSH = "canceling ACR run cb7 failed (AuthorizationFailed): it may still push its images"


@pytest.fixture
def app(tmp_path):
    app = FakeApp(tmp_path, REGISTRY)
    app.sources.dockerfile = f"FROM {BASE}\n"
    task = Task(name="app", images=["app:{{.Run.ID}}"], context="/ctx",
                dependencies=[Dependency(BASE, "sha256:" + "0" * 64, True)])
    app.task_store.create(task)
    app.index.sync_task(task, previous=[])
    return app


def running(app: FakeApp, heartbeat: datetime | None, builder_run_id: str | None = "cb7") -> str:
    """A manual run an attempt is building (or was: `heartbeat` tells), with its ACR run's id saved."""
    run_id = app.scheduler.run_task("app").run_id
    transition(app.runs, run_id, lambda r: replace(r, status=RunStatus.RUNNING, attempt=1,
                                                   started_at=utc_now(), heartbeat_at=heartbeat,
                                                   builder_run_id=builder_run_id))
    return run_id


def test_housekeeping_cancels_the_acr_run_of_a_run_whose_worker_went_silent(app):
    long_ago = utc_now() - timedelta(minutes=30)
    run_id = running(app, heartbeat=long_ago)

    assert app.lifecycle.sweep() == [run_id]
    assert app.builder.canceled == ["cb7"]
    run = app.runs.get(run_id)[0]
    assert (run.status, run.reason) == (RunStatus.FAILED, "the worker stopped reporting")

    app.lifecycle.sweep()  # the next sweep finds it finished: no second cancel
    assert app.builder.canceled == ["cb7"]


def test_the_poison_handler_cancels_the_acr_run_once(app):
    run_id = running(app, heartbeat=None)  # released by the attempt that crashed

    run = app.lifecycle.fail_abandoned(run_id, "every delivery failed")
    assert run.status == RunStatus.FAILED and app.builder.canceled == ["cb7"]
    app.lifecycle.fail_abandoned(run_id, "every delivery failed")  # the poison message redelivered
    assert app.builder.canceled == ["cb7"]


def test_a_run_a_worker_still_follows_is_left_to_it(app):
    run_id = running(app, heartbeat=utc_now())
    assert app.lifecycle.fail_abandoned(run_id, "every delivery failed") is None
    assert app.builder.canceled == []


def test_a_run_without_an_acr_run_asks_the_builder_nothing(app):
    run_id = running(app, heartbeat=None, builder_run_id=None)
    assert app.lifecycle.fail_abandoned(run_id, "every delivery failed").status == RunStatus.FAILED
    queued = app.scheduler.run_task("app").run_id
    assert app.scheduler.cancel(queued).status == RunStatus.CANCELED
    assert app.builder.canceled == []


def test_a_cancel_by_request_cancels_the_acr_run_even_with_no_worker_left(app):
    run_id = running(app, heartbeat=utc_now() - timedelta(minutes=2))  # its worker died

    run = app.scheduler.cancel(run_id)

    assert (run.status, run.reason) == (RunStatus.CANCELED, "canceled by request")
    assert app.builder.canceled == ["cb7"]


def test_a_cancel_acr_refuses_is_said_in_the_reason_and_does_not_fail_the_request(app):
    app.builder.cancel_note = MAY_STILL_PUSH
    run_id = running(app, heartbeat=None)

    run = app.scheduler.cancel(run_id)

    assert run.status == RunStatus.CANCELED
    assert run.reason == f"canceled by request; {MAY_STILL_PUSH}"
    assert app.runs.get(run_id)[0].reason == run.reason


def test_a_builder_that_crashes_while_canceling_never_fails_the_caller(app):
    app.builder.cancel_crash = RuntimeError("BASETRIGGER_ACR_NAME is not set")
    run_id = running(app, heartbeat=None)
    assert app.scheduler.cancel(run_id).status == RunStatus.CANCELED
    other = running(app, heartbeat=None)
    assert app.lifecycle.fail_abandoned(other, "every delivery failed").status == RunStatus.FAILED
    assert app.builder.canceled == ["cb7", "cb7"]


def test_a_wave_cancel_cancels_the_acr_run_of_its_running_member_once(app):
    run_id = running(app, heartbeat=None)
    wave_id = app.runs.get(run_id)[0].wave_id

    app.waves.cancel(wave_id)
    app.lifecycle.reconcile()  # housekeeping's redo finds the run finished: nothing canceled twice

    assert app.runs.get(run_id)[0].status == RunStatus.CANCELED
    assert app.builder.canceled == ["cb7"]


def test_run_records_name_the_builder_run_they_cancel(app):
    # The port's contract: the run handed to cancel() is the ended one, with its ACR run's id.
    seen: list[Run] = []
    app.builder.cancel = lambda run: seen.append(run)  # type: ignore[method-assign]
    run_id = running(app, heartbeat=None)
    app.scheduler.cancel(run_id)
    assert [(r.run_id, r.status, r.builder_run_id) for r in seen] == [(run_id, RunStatus.CANCELED, "cb7")]
    assert seen[0].trigger == Trigger.MANUAL
