"""The whole pipeline on the local stack: registry push -> notification -> dispatch -> worker ->
buildah -> registry, with the local Functions host serving function_app.py. Nothing is mocked."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import pytest
import requests

from shared.bootstrap import Services
from shared.domain.tasks import Task
from shared.domain.vocabulary import TERMINAL, Outcome, RunStatus, Trigger
from tests.integration.buildah_tools import buildah, push, push_base, read_file

APP_DOCKERFILE = """\
ARG BASE
FROM ${BASE}
RUN cat /etc/base-version > /app-base-version
"""


@pytest.fixture
def names():
    return f"it{uuid.uuid4().hex[:8]}"


def create_task(stack: Services, tmp_path: Path, name: str, base: str, image: str) -> Task:
    context = tmp_path / name
    context.mkdir()
    (context / "Dockerfile").write_text(APP_DOCKERFILE)
    return stack.tasks.create(Task(name=name, images=[image], context=str(context),
                                   build_args={"BASE": base}))


def wait_for_run(stack: Services, task: str, after: set[str] = frozenset(), timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs, _ = stack.runs.newest(task=task, top=5)
        fresh = [r for r in runs if r.run_id not in after and r.status in TERMINAL]
        if fresh:
            return fresh[0]
        time.sleep(0.5)
    raise AssertionError(f"no finished run of {task} within {timeout}s; runs: {runs}")


def wait_for_decision(stack: Services, image: str, digest: str, outcome: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [x for x in stack.decisions.recent(top=50, image=image) if x.digest == digest]
        if any(x.outcome == outcome for x in found):
            return next(x for x in found if x.outcome == outcome)
        time.sleep(0.3)
    raise AssertionError(f"no {outcome} decision for {image}@{digest}: {[x.outcome for x in found]}")


def test_base_push_rebuilds_the_dependent_on_the_new_base(stack, names, tmp_path):
    registry = os.environ["REGISTRY"]
    base = f"{registry}/{names}/node:9-alpine"
    push_base(tmp_path, base, "9.11.2")
    task = create_task(stack, tmp_path, f"{names}-app", base, f"{names}/app:{{{{.Run.ID}}}}")
    assert [dep.image for dep in task.dependencies] == [base]
    assert task.dependencies[0].digest, "dependencies and digests are known before the first run"

    new_digest = push_base(tmp_path, base, "9.11.2a")
    run = wait_for_run(stack, task.name)
    assert (run.status, run.trigger) == (RunStatus.SUCCEEDED, Trigger.IMAGE_UPDATE), run.reason
    assert run.cause == f"{base}@{new_digest}"
    assert run.base_digests == {base: new_digest}
    assert run.output_digest and run.output_images == [f"{registry}/{names}/app:{run.run_id}"]
    assert read_file(run.output_images[0], "/app-base-version").strip() == "9.11.2a"
    assert "buildah" in stack.logs.read(run.run_id).decode()
    # the task now remembers the digest it built on
    assert stack.tasks.store.get(task.name).dependencies[0].digest == new_digest

    # an identical re-push fires nothing, and says why
    assert push(base, tmp_path) == new_digest
    repushed = wait_for_decision(stack, base, new_digest, Outcome.DIGEST_UNCHANGED)
    assert repushed.tasks[0].reason == f"the task last built on {new_digest}"
    runs, _ = stack.runs.newest(task=task.name)
    assert [r.run_id for r in runs] == [run.run_id]


def test_two_level_chain_rebuilds_both_levels(stack, names, tmp_path):
    registry = os.environ["REGISTRY"]
    base, mid = f"{registry}/{names}/base:1", f"{registry}/{names}/mid:1"
    push_base(tmp_path, base, "one")
    # mid: FROM base, pushed under a fixed tag that app is built FROM
    mid_task = create_task(stack, tmp_path, f"{names}-mid", base, f"{names}/mid:1")
    # build mid once by hand so that app has a base to be created on
    buildah("bud", "--isolation", "chroot", "--build-arg", f"BASE={base}", "-t", mid,
            "-f", str(Path(mid_task.context) / "Dockerfile"), mid_task.context)
    push(mid, tmp_path)
    app_task = create_task(stack, tmp_path, f"{names}-app", mid, f"{names}/app:{{{{.Run.ID}}}}")
    before = {r.run_id for r in stack.runs.newest(task=app_task.name)[0]}

    push_base(tmp_path, base, "two")
    mid_run = wait_for_run(stack, mid_task.name)
    assert mid_run.status == RunStatus.SUCCEEDED, mid_run.reason
    app_run = wait_for_run(stack, app_task.name, after=before)
    assert (app_run.status, app_run.trigger) == (RunStatus.SUCCEEDED, Trigger.IMAGE_UPDATE), app_run.reason
    # One wave, planned at the base push: app waited for mid, then built once, on the new mid.
    assert app_run.wave_id is not None and app_run.wave_id == mid_run.wave_id
    assert app_run.started_at >= mid_run.finished_at
    assert read_file(app_run.output_images[0], "/app-base-version").strip() == "two"


def eventgrid_event(registry: str, repository: str, tag: str, digest: str) -> dict:
    """Microsoft's documented sample (tests/samples), pointed at our registry and image."""
    sample = Path(__file__).resolve().parents[1] / "samples" / "acr-imagepushed-eventgrid-schema.json"
    event = json.loads(sample.read_text())
    event["id"] = str(uuid.uuid4())
    event["data"]["target"].update(repository=repository, tag=tag, digest=digest)
    event["data"]["request"]["host"] = registry
    return event


def post_eventgrid(body, event_type="Notification"):
    url = f"{os.environ['BASETRIGGER_URL']}/runtime/webhooks/eventgrid"
    return requests.post(url, params={"functionName": "eventgrid_image_pushed",
                                      "code": os.environ["BASETRIGGER_KEY"]},
                         headers={"aeg-event-type": event_type}, json=body, timeout=30)


def test_eventgrid_delivery_is_dispatched_once_even_when_redelivered(stack, names, tmp_path):
    registry = os.environ["REGISTRY"]
    base = f"{registry}/{names}/eg:1"
    push_base(tmp_path, base, "eg-one")
    task = create_task(stack, tmp_path, f"{names}-eg", base, f"{names}/eg-app:{{{{.Run.ID}}}}")

    handshake = post_eventgrid([{"id": "v1", "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
                                 "data": {"validationCode": "abc-123"}, "eventTime": "2026-11-27T00:00:00Z",
                                 "subject": "", "dataVersion": "1"}], "SubscriptionValidation")
    assert handshake.status_code == 200 and handshake.json() == {"validationResponse": "abc-123"}

    event = eventgrid_event(registry, f"{names}/eg", "1", "sha256:" + "e" * 64)
    for _ in range(2):  # Event Grid redelivers
        assert post_eventgrid([event]).status_code == 202  # the Functions host accepts with 202
    decision = stack.decisions.seen(event["id"])
    assert decision is not None and decision.outcome == Outcome.QUEUED and len(decision.runs) == 1
    runs, _ = stack.runs.newest(task=task.name)
    assert [r.run_id for r in runs] == decision.runs


def test_malformed_and_foreign_events_are_answered_and_recorded(stack, names):
    foreign = {"id": f"{names}-deleted", "eventType": "Microsoft.ContainerRegistry.ImageDeleted",
               "subject": "x", "data": {}, "eventTime": "2026-11-27T00:00:00Z", "dataVersion": "1"}
    assert post_eventgrid([foreign]).status_code == 202
    assert stack.decisions.seen(foreign["id"]).outcome == Outcome.IGNORED

    url = f"{os.environ['BASETRIGGER_URL']}/api/hooks/distribution"
    key = {"x-functions-key": os.environ["BASETRIGGER_KEY"]}
    bad = requests.post(url, data=b"{not json", headers=key, timeout=10)
    assert bad.status_code == 400 and "not JSON" in bad.json()["error"]["message"]
    assert requests.post(url, json={"events": []}, timeout=10).status_code == 401
    huge = requests.post(url, data=b"x" * (2 * 1024 * 1024), headers=key, timeout=10)
    assert huge.status_code == 413
