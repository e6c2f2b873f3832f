"""The build worker on the running stack: crashes end in a recorded failure, secrets stay hidden,
abandoned runs are swept, and a redelivered message never builds twice."""

from __future__ import annotations

import os
import time
import uuid
from datetime import timedelta

import pytest

from shared.runs import FAILED, MANUAL, QUEUED, RUNNING, SUCCEEDED, TERMINAL, Run, now
from shared.services import Services
from shared.tasks import Task
from shared.work_queue import decode
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
    # A quick build whose spec lacks its context: the worker raises on every delivery.
    stack.runs.create_many([Run(run_id=run_id, status=QUEUED, trigger=MANUAL, spec={})])
    stack.queue.send([run_id])
    run = wait_terminal(stack, run_id, timeout=180)
    assert run.status == FAILED
    assert "failed on every delivery" in run.reason
    assert run.attempt == 3  # host.json maxDequeueCount


def test_secret_build_args_never_reach_the_log_or_the_run(stack, tmp_path):
    registry = os.environ["REGISTRY"]
    name = f"sec{uuid.uuid4().hex[:8]}"
    base = f"{registry}/{name}/base:1"
    push_base(tmp_path, base, "s1")
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {base}\nARG TOKEN\nRUN echo \"token is $TOKEN\"\n")
    stack.tasks.create(Task(name=name, images=[f"{name}/app:{{{{.Run.ID}}}}"], context=str(context),
                            secret_args={"TOKEN": SECRET}))
    run = wait_terminal(stack, stack.scheduler.run_task(name).run_id)
    assert run.status == SUCCEEDED, run.reason
    log = stack.logs.read(run.run_id).decode()
    assert "token is ***" in log and SECRET not in log
    assert SECRET not in str(run.to_dict())
    entity = stack.tasks.store.table.get_entity("task", name)
    assert SECRET not in str(dict(entity))  # sealed at rest


def test_housekeeping_fails_runs_whose_worker_went_silent(stack):
    (run_id,) = stack.runs.allocate(1)
    silent = now() - timedelta(minutes=30)
    stack.runs.create_many([Run(run_id=run_id, status=RUNNING, trigger=MANUAL, started_at=silent,
                                heartbeat_at=silent, attempt=1)])
    assert run_id in stack.worker.sweep()
    run, _ = stack.runs.get(run_id)
    assert run.status == FAILED and run.reason == "the worker stopped reporting"


def test_a_redelivered_message_does_not_build_a_finished_run_again(stack, tmp_path):
    (run_id,) = stack.runs.allocate(1)
    stack.runs.create_many([Run(run_id=run_id, status=SUCCEEDED, trigger=MANUAL, attempt=1,
                                started_at=now(), finished_at=now())])
    assert stack.worker.execute(run_id) is None
    run, _ = stack.runs.get(run_id)
    assert (run.status, run.attempt) == (SUCCEEDED, 1)


def test_a_run_held_by_a_live_worker_is_retried_later_not_built_twice(stack):
    from shared.worker import RetryLater

    (run_id,) = stack.runs.allocate(1)
    stack.runs.create_many([Run(run_id=run_id, status=RUNNING, trigger=MANUAL, attempt=1,
                                started_at=now(), heartbeat_at=now())])
    with pytest.raises(RetryLater):
        stack.worker.execute(run_id)
    assert stack.worker.fail_abandoned(run_id, "poison") is None  # a live worker is not failed
    assert stack.runs.get(run_id)[0].status == RUNNING
    stack.scheduler.cancel(run_id)  # leave no Running run behind in the stack's tables


def test_housekeeping_resends_a_queued_run_that_lost_its_message(services):
    (run_id,) = services.runs.allocate(1)
    long_ago = now() - timedelta(minutes=30)
    services.runs.create_many([Run(run_id=run_id, status=QUEUED, trigger=MANUAL, created_at=long_ago)])
    assert services.worker.sweep() == []
    queue = services.storage.queue(services.settings.build_queue)
    assert [decode(m.content) for m in queue.receive_messages()] == [run_id]


def test_housekeeping_fails_a_released_run_nobody_took_over(services):
    (run_id,) = services.runs.allocate(1)
    long_ago = now() - timedelta(minutes=30)
    services.runs.create_many([Run(run_id=run_id, status=RUNNING, trigger=MANUAL, attempt=1,
                                   created_at=long_ago, started_at=long_ago, heartbeat_at=None)])
    assert services.worker.sweep() == [run_id]
