"""The build worker on the running stack: crashes end in a recorded failure, secrets stay hidden,
abandoned runs are swept, and a redelivered message never builds twice."""

from __future__ import annotations

import base64
import os
import time
import uuid
from datetime import timedelta

import pytest

from shared.bootstrap import Services
from shared.domain.builds import BuildSpec, Source
from shared.domain.messages import decode
from shared.domain.runs import Run
from shared.domain.tasks import Task
from shared.domain.vocabulary import TERMINAL, RunStatus, Trigger, utc_now
from tests.integration.buildah_tools import push_base

SECRET = "pa55-" + uuid.uuid4().hex


def wait_terminal(stack: Services, run_id: str, timeout: float = 120) -> Run:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run, _ = stack.runs.get(run_id)
        if run.status in TERMINAL:
            return run
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} still {run.status} after {timeout}s")


def test_a_run_that_crashes_every_attempt_ends_failed_with_a_reason(stack):
    (run_id,) = stack.runs.allocate(1)
    # A quick build whose upload is not in blob storage: the worker raises on every delivery.
    spec = BuildSpec(Source(upload=f"{run_id}-missing.tar.gz"))
    stack.runs.create_many([Run(run_id=run_id, status=RunStatus.QUEUED, trigger=Trigger.MANUAL, spec=spec)])
    stack.lifecycle.send([run_id])
    run = wait_terminal(stack, run_id, timeout=180)
    assert run.status == RunStatus.FAILED
    assert "failed on every delivery" in run.reason
    assert run.attempt == 3  # host.json maxDequeueCount


def test_secret_build_args_never_reach_the_log_or_the_run(stack, tmp_path):
    registry = os.environ["REGISTRY"]
    name = f"sec{uuid.uuid4().hex[:8]}"
    base = f"{registry}/{name}/base:1"
    push_base(tmp_path, base, "s1")
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(  # secret args are build secrets, files in /run/secrets
        f"FROM {base}\nRUN --mount=type=secret,id=TOKEN echo \"token is $(cat /run/secrets/TOKEN)\"\n")
    stack.tasks.create(Task(name=name, images=[f"{name}/app:{{{{.Run.ID}}}}"], context=str(context),
                            secret_args={"TOKEN": SECRET}))
    run = wait_terminal(stack, stack.scheduler.run_task(name).run_id)
    assert run.status == RunStatus.SUCCEEDED, run.reason
    log = stack.logs.read(run.run_id).decode()
    assert "token is ***" in log and SECRET not in log
    assert SECRET not in str(run.to_dict())
    entity = stack.tasks.store.table.get_entity("task", name)
    assert SECRET not in str(dict(entity))  # sealed at rest


def test_housekeeping_fails_runs_whose_worker_went_silent(stack):
    (run_id,) = stack.runs.allocate(1)
    silent = utc_now() - timedelta(minutes=30)
    stack.runs.create_many([Run(run_id=run_id, status=RunStatus.RUNNING, trigger=Trigger.MANUAL,
                                started_at=silent, heartbeat_at=silent, attempt=1)])
    assert run_id in stack.lifecycle.sweep()
    run, _ = stack.runs.get(run_id)
    assert run.status == RunStatus.FAILED and run.reason == "the worker stopped reporting"


def test_a_redelivered_message_does_not_build_a_finished_run_again(stack, tmp_path):
    (run_id,) = stack.runs.allocate(1)
    stack.runs.create_many([Run(run_id=run_id, status=RunStatus.SUCCEEDED, trigger=Trigger.MANUAL, attempt=1,
                                started_at=utc_now(), finished_at=utc_now())])
    assert stack.worker.execute(run_id) is None
    run, _ = stack.runs.get(run_id)
    assert (run.status, run.attempt) == (RunStatus.SUCCEEDED, 1)


def test_a_run_held_by_a_live_worker_is_retried_later_not_built_twice(stack):
    from shared.service_layer.worker import RetryLater

    (run_id,) = stack.runs.allocate(1)
    stack.runs.create_many([Run(run_id=run_id, status=RunStatus.RUNNING, trigger=Trigger.MANUAL, attempt=1,
                                started_at=utc_now(), heartbeat_at=utc_now())])
    with pytest.raises(RetryLater):
        stack.worker.execute(run_id)
    assert stack.lifecycle.fail_abandoned(run_id, "poison") is None  # a live worker is not failed
    assert stack.runs.get(run_id)[0].status == RunStatus.RUNNING
    stack.scheduler.cancel(run_id)  # leave no Running run behind in the stack's tables


def test_housekeeping_resends_a_queued_run_that_lost_its_message(services):
    (run_id,) = services.runs.allocate(1)
    long_ago = utc_now() - timedelta(minutes=30)
    services.runs.create_many([Run(run_id=run_id, status=RunStatus.QUEUED, trigger=Trigger.MANUAL,
                                   created_at=long_ago)])
    assert services.lifecycle.sweep() == []
    queue = services.storage.queue(services.settings.build_queue)
    assert [decode(m.content) for m in queue.receive_messages()] == [run_id]


def test_housekeeping_fails_a_released_run_nobody_took_over(services):
    (run_id,) = services.runs.allocate(1)
    long_ago = utc_now() - timedelta(minutes=30)
    services.runs.create_many([Run(run_id=run_id, status=RunStatus.RUNNING, trigger=Trigger.MANUAL, attempt=1,
                                   created_at=long_ago, started_at=long_ago, heartbeat_at=None)])
    assert services.lifecycle.sweep() == [run_id]


PEM = ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7" + uuid.uuid4().hex
       + "\nq3d5mXkz0Zb8Rr2Yt9Q1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6\n-----END PRIVATE KEY-----")


def test_multi_line_and_base64_secrets_never_reach_the_log(stack, tmp_path):
    registry = os.environ["REGISTRY"]
    name = f"pem{uuid.uuid4().hex[:8]}"
    base = f"{registry}/{name}/base:1"
    push_base(tmp_path, base, "p1")
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(
        f"FROM {base}\nRUN --mount=type=secret,id=KEY cd /run/secrets && cat KEY && echo"
        " && { cat KEY; echo; } | base64 && base64 KEY\n")
    stack.tasks.create(Task(name=name, images=[f"{name}/app:{{{{.Run.ID}}}}"], context=str(context),
                            secret_args={"KEY": PEM}))
    run = wait_terminal(stack, stack.scheduler.run_task(name).run_id)
    assert run.status == RunStatus.SUCCEEDED, run.reason
    log = stack.logs.read(run.run_id).decode()
    assert "***" in log
    for line in PEM.splitlines()[1:-1]:
        assert line not in log
    encoded = base64.b64encode((PEM + "\n").encode()).decode()
    assert encoded[:76] not in log and base64.b64encode(PEM.encode()).decode()[:76] not in log
