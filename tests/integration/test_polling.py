"""Polling on the local stack's real parts: a registry that sends no notifications (`PUBLIC_REGISTRY`)
and one that needs basic credentials over TLS (`AUTH_REGISTRY`, htpasswd), real Azurite, buildah, and
a Functions host of this checkout whose poll timer fires every 2 seconds (BASETRIGGER_POLL_INTERVAL).

A push there is seen by the poller alone and rebuilds the dependent; a wrong password and an
unreachable registry each leave a decision and an error in `GET /api/bases` (what `base list` shows).
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared.adapters.base_table import LEGACY_BASES, partition_of, to_entity
from shared.adapters.builders.registry_auth import auth_file_args
from shared.bootstrap import Services
from shared.domain.credentials import RegistryCredential
from shared.domain.image_ref import encode_key
from shared.domain.poll_state import BaseState
from shared.domain.tasks import Task
from shared.domain.vocabulary import TERMINAL, EventSource, Outcome, RunStatus, Trigger
from tests.conftest import unique_settings
from tests.integration.buildah_tools import BASE_DOCKERFILE, BUSYBOX, _tls, buildah, read_file
from tests.own_host import own_host

APP_DOCKERFILE = "ARG BASE\nFROM ${BASE}\nRUN cat /etc/base-version > /app-base-version\n"
POLL_SECONDS = 2


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run the tests with `make test` (the stack exports it)")
    return value


def push_base(workdir: Path, image: str, version: str, credential: RegistryCredential | None = None) -> str:
    """Build a busybox base recording `version`, push it (signing in when given a credential)."""
    import shutil

    context = workdir / f"base-{version}-{uuid.uuid4().hex[:6]}"
    context.mkdir(parents=True)
    shutil.copy(BUSYBOX, context / "busybox")
    (context / "Dockerfile").write_text(BASE_DOCKERFILE.format(version=version))
    buildah("bud", "--isolation", "chroot", "--layers=false", "-t", image, str(context))
    digest_file = workdir / "digest"
    with auth_file_args([credential] if credential else [], workdir) as auth:
        buildah("push", *_tls(), *auth, "--digestfile", str(digest_file), image, f"docker://{image}")
    return digest_file.read_text().strip()


@pytest.fixture(scope="module")
def polling_host(tmp_path_factory):
    """A host of this checkout on its own tables and queue, polling every 2 s; its services."""
    settings = unique_settings(BASETRIGGER_POLL_INTERVAL=str(POLL_SECONDS))
    log = tmp_path_factory.mktemp("host") / "host.log"
    with own_host(log, BASETRIGGER_TABLE_PREFIX=settings.table_prefix,
                  BASETRIGGER_BUILD_QUEUE=settings.build_queue,
                  BASETRIGGER_POLL_INTERVAL=str(POLL_SECONDS),
                  BASETRIGGER_SECRET_KEY=settings.secret_key or "",
                  BASETRIGGER_REGISTRY=_env("REGISTRY")) as host:
        services = Services(settings)
        try:
            yield host, services
        finally:
            services.storage.drop_all()


def create_task(services: Services, tmp_path: Path, name: str, base: str,
                credentials: list[RegistryCredential] | None = None) -> Task:
    context = tmp_path / name
    context.mkdir()
    (context / "Dockerfile").write_text(APP_DOCKERFILE)
    return services.tasks.create(Task(name=name, images=[f"{name}/app:{{{{.Run.ID}}}}"], context=str(context),
                                      build_args={"BASE": base}, credentials=list(credentials or [])))


def wait_for(what: str, probe, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"no {what} within {timeout:.0f}s")


def finished_run(services: Services, task: str):
    def probe():
        runs, _ = services.runs.newest(task=task, top=5)
        return next((r for r in runs if r.status in TERMINAL), None)
    return wait_for(f"finished run of {task}", probe)


def base_entry(host, base: str, condition):
    def probe():
        response = host.api().get(f"{host.url}/api/bases", timeout=30)
        assert response.status_code == 200, response.text
        answer = response.json()
        entry = next((b for b in answer["bases"] if b["base"] == base), None)
        return entry if entry and condition(entry) else None
    return wait_for(f"state of {base} in /api/bases", probe)


def test_a_push_to_a_registry_without_notifications_rebuilds_its_dependent(polling_host, tmp_path):
    host, services = polling_host
    name = f"pp{uuid.uuid4().hex[:8]}"
    base = f"{_env('PUBLIC_REGISTRY')}/{name}/node:9-alpine"
    first = push_base(tmp_path, base, "9.11.2")
    task = create_task(services, tmp_path, name, base)
    assert task.dependencies[0].digest == first
    # The poller has seen the base (and found nothing to do) before the push.
    seen = base_entry(host, base, lambda b: b["digest"] == first)
    assert seen["watch"] == "poll" and seen["tasks"] == [name] and seen["last_error"] is None

    second = push_base(tmp_path, base, "9.11.2a")
    run = finished_run(services, name)
    assert (run.status, run.trigger) == (RunStatus.SUCCEEDED, Trigger.IMAGE_UPDATE), run.reason
    assert run.cause == f"{base}@{second}"
    assert read_file(run.output_images[0], "/app-base-version").strip() == "9.11.2a"
    decision = next(d for d in services.decisions.recent(top=20, image=base) if d.digest == second)
    assert decision.source == EventSource.POLL and decision.outcome == Outcome.QUEUED
    assert decision.runs == [run.run_id]
    # Later cycles see the same digest again: nothing more is queued.
    base_entry(host, base, lambda b: b["last_checked"] and b["digest"] == second
               and b["last_checked"] > seen["last_checked"])
    runs, _ = services.runs.newest(task=name)
    assert [r.run_id for r in runs] == [run.run_id]


def test_a_push_to_an_authenticated_registry_rebuilds_a_task_with_its_credentials(polling_host, tmp_path):
    host, services = polling_host
    name = f"pa{uuid.uuid4().hex[:8]}"
    registry = _env("AUTH_REGISTRY")
    good = RegistryCredential.create(registry, _env("AUTH_REGISTRY_USER"), _env("AUTH_REGISTRY_PASSWORD"))
    base = f"{registry}/{name}/base:1"
    first = push_base(tmp_path, base, "one", good)
    task = create_task(services, tmp_path, name, base, [good])
    assert task.dependencies[0].digest == first, "the task reads its base with its credentials"
    assert services.task_store.get(name).credentials[0].password == good.password
    base_entry(host, base, lambda b: b["digest"] == first)

    second = push_base(tmp_path, base, "two", good)
    run = finished_run(services, name)
    assert run.status == RunStatus.SUCCEEDED, run.reason
    assert run.cause == f"{base}@{second}"
    log = services.logs.read(run.run_id).decode()
    assert good.password not in log


def test_a_wrong_password_gives_a_decision_that_says_so(polling_host, tmp_path):
    host, services = polling_host
    name = f"pw{uuid.uuid4().hex[:8]}"
    registry = _env("AUTH_REGISTRY")
    good = RegistryCredential.create(registry, _env("AUTH_REGISTRY_USER"), _env("AUTH_REGISTRY_PASSWORD"))
    wrong = RegistryCredential.create(registry, _env("AUTH_REGISTRY_USER"), "not-the-password")
    base = f"{registry}/{name}/base:1"
    push_base(tmp_path, base, "one", good)
    create_task(services, tmp_path, name, base, [wrong])
    entry = base_entry(host, base, lambda b: b["last_error"])
    assert "refused the credentials" in entry["last_error"] and name in entry["last_error"]
    assert entry["digest"] is None
    decision = wait_for("registry-error decision", lambda: next(
        (d for d in services.decisions.recent(top=50, image=base) if d.outcome == Outcome.REGISTRY_ERROR),
        None))
    assert "refused the credentials" in decision.reason
    assert "not-the-password" not in decision.reason and "not-the-password" not in entry["last_error"]


def test_an_unreachable_base_shows_its_error(polling_host, tmp_path):
    host, services = polling_host
    name = f"pu{uuid.uuid4().hex[:8]}"
    base = f"localhost:1/{name}/base:1"  # nothing listens on port 1
    task = create_task(services, tmp_path, name, base)
    assert task.dependencies[0].digest is None
    entry = base_entry(host, base, lambda b: b["last_error"])
    assert entry["last_error"].startswith("cannot reach localhost:1")
    assert entry["tasks"] == [name] and entry["watch"] == "poll"


def test_base_rows_are_kept_in_buckets_read_as_one_range_and_schema_1_rows_are_moved(services):
    """The `bases` table on Azurite: rows spread over bucket partitions (several transactions),
    read back whole with the sweeps; a row of the old single partition is moved into its bucket."""
    repo = services.base_states
    at = datetime(2026, 11, 30, tzinfo=UTC)
    states = [BaseState(f"quay.io/team/b{n:03d}:1", digest="sha256:" + f"{n:064x}", checked_at=at,
                        platforms={"linux/amd64": "sha256:" + "a" * 64} if n == 7 else {})
              for n in range(250)]
    assert len({partition_of(s.base) for s in states}) > 1
    repo.save_many(states)
    old = BaseState("quay.io/team/old:1", digest="sha256:" + "f" * 64, checked_at=at, error="refused",
                    error_at=at)
    table = services.storage.table("bases")
    table.create_entity({**to_entity(old), "PartitionKey": LEGACY_BASES})
    repo.save_sweeps({"quay.io": at + timedelta(minutes=5), "ghcr.io": at})
    repo.save_sweeps({"quay.io": at + timedelta(minutes=10)})

    read = repo.all()
    assert read == {s.base: s for s in [*states, old]}
    assert repo.sweeps() == {"quay.io": at + timedelta(minutes=10), "ghcr.io": at}
    partitions = {e["PartitionKey"] for e in table.list_entities(select=["PartitionKey"])}
    assert LEGACY_BASES not in partitions and partition_of(old.base) in partitions
    assert table.get_entity(partition_of(old.base), encode_key(old.base))["Error"] == "refused"

    repo.remove_many([s.base for s in states[:120]] + ["quay.io/team/never:1"])
    assert set(repo.all()) == {s.base for s in states[120:]} | {old.base}
