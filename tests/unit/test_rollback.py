"""`base quarantine --rollback` on in-memory fakes: which tags move back, and the cases that must not
move anything (no earlier image, pushed again since, back already) or that fail (the registry
refuses). The stack's registry is tests/integration/test_rollback.py's."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.domain.builds import BuildResult
from shared.domain.events import ImagePushed
from shared.domain.manifests import Failure, RawManifest, RegistryError
from shared.domain.quarantine import QuarantineEntry
from shared.domain.runs import Run
from shared.domain.tasks import Dependency, Task
from shared.domain.vocabulary import EventSource, Outcome, RunStatus, Trigger
from shared.service_layer.rollback import Rollback
from tests.fakes import FakeApp

REGISTRY = "localhost:5000"
BASE = f"{REGISTRY}/base:1"
LATEST = f"{REGISTRY}/app:latest"
GOOD, BAD = "sha256:" + "0" * 64, "sha256:" + "b" * 64
OLD_IMAGE, NEW_IMAGE, OTHER_IMAGE = ("sha256:" + c * 64 for c in "acd")


class Store:
    """A registry's manifests by reference; every PUT is kept, and moves the tag."""

    def __init__(self, app: FakeApp):
        self.app = app
        self.puts: list[tuple[str, bytes]] = []
        self.refuse: RegistryError | None = None

    def images(self, reference, credentials=()):
        return self

    def manifest(self, reference: str) -> RawManifest:
        digest = reference.rpartition("@")[2]
        return RawManifest(digest, "application/vnd.oci.image.manifest.v1+json",
                           f"manifest {digest}".encode())

    def put_manifest(self, reference: str, body: bytes, media_type: str) -> str:
        if self.refuse:
            raise self.refuse
        self.puts.append((reference, body))
        self.app.registry.digests[reference] = body.decode().split()[1]
        return reference


@pytest.fixture
def app(tmp_path):
    return FakeApp(tmp_path, REGISTRY)


def scenario(app: FakeApp, earlier: bool = True) -> None:
    """app:latest built on GOOD (unless not `earlier`), then rebuilt on BAD by a wave."""
    task = Task(name="app", images=["app:latest"], context="/ctx/app", dependencies=[Dependency(BASE, GOOD)])
    app.sources.dockerfiles[task.context] = f"FROM {BASE}\n"
    app.task_store.create(task)
    app.index.sync_task(task, previous=[])
    if earlier:
        (run_id,) = app.runs.allocate(1)
        app.runs.create_many([Run(run_id, RunStatus.SUCCEEDED, Trigger.MANUAL, task="app",
                                  output_images=[LATEST], output_digest=OLD_IMAGE,
                                  base_digests={BASE: GOOD})])
    decision = app.dispatcher.handle(ImagePushed("bad-push", REGISTRY, "base", "1", BAD, datetime.now(UTC),
                                                 EventSource.DISTRIBUTION))
    app.builder.result = BuildResult(RunStatus.SUCCEEDED, output_digest=NEW_IMAGE, base_digests={BASE: BAD})
    (run_id,) = decision.runs
    app.worker.execute(run_id)
    app.registry.digests[LATEST] = NEW_IMAGE
    assert app.task_store.get("app").dependencies[0].digest == BAD


def roll_back(app: FakeApp, store: Store):
    rollback = Rollback(app.wave_store, app.runs, app.tasks, app.registry, store, app.decisions)
    return rollback.roll_back(QuarantineEntry(BAD, BASE, "broken libc"))


def test_the_rebuilt_tag_goes_back_to_its_earlier_image_by_a_rollback_run(app):
    scenario(app)
    store = Store(app)
    result = roll_back(app, store)
    (run,) = result.runs
    assert (run.trigger, run.status, run.output_images, run.output_digest, run.base_digests) == \
        (Trigger.ROLLBACK, RunStatus.SUCCEEDED, [LATEST], OLD_IMAGE, {BASE: GOOD})
    assert store.puts == [(LATEST, f"manifest {OLD_IMAGE}".encode())]
    assert app.runs.get(run.run_id)[0] == run  # recorded, finished: no worker ever gets it
    assert app.task_store.get("app").dependencies[0].digest == GOOD  # and its index row with it
    assert app.table.get(BASE, "app").built_digest == GOOD
    assert (result.decision.source, result.decision.outcome, result.decision.runs) == \
        (EventSource.ROLLBACK, Outcome.ROLLED_BACK, [run.run_id])
    # Again: nothing moves, no run id is spent.
    again = roll_back(app, store)
    assert again.runs == [] and len(store.puts) == 1
    assert [t.reason for t in again.decision.tasks] == \
        [f"{LATEST}: points at the earlier image {OLD_IMAGE} already: nothing to move"]
    assert app.runs.allocate(1) == [f"da{int(run.run_id[2:]) + 1}"]


def test_once_released_the_next_push_of_the_digest_rebuilds_the_rolled_back_task(app):
    scenario(app)
    roll_back(app, Store(app))
    again = app.dispatcher.handle(ImagePushed("bad-push-again", REGISTRY, "base", "1", BAD, datetime.now(UTC),
                                              EventSource.DISTRIBUTION))
    assert again.outcome == Outcome.QUEUED, again.reason


def test_no_earlier_image_is_a_decision_and_no_run(app):
    scenario(app, earlier=False)
    store = Store(app)
    result = roll_back(app, store)
    assert result.runs == [] and store.puts == []
    assert (result.decision.outcome, [(t.task, t.outcome, t.reason) for t in result.decision.tasks]) == (
        Outcome.NOT_ROLLED_BACK,
        [("app", Outcome.NOT_ROLLED_BACK, f"{LATEST}: no earlier image under this tag: left as it is")])
    assert app.task_store.get("app").dependencies[0].digest == BAD  # nothing changed


def test_a_tag_pushed_again_since_is_never_overwritten(app):
    scenario(app)
    app.registry.digests[LATEST] = OTHER_IMAGE
    store = Store(app)
    result = roll_back(app, store)
    assert result.runs == [] and store.puts == []
    (detail,) = result.decision.tasks
    assert detail.outcome == Outcome.NOT_ROLLED_BACK and f"points at {OTHER_IMAGE} now" in detail.reason


def test_a_move_the_registry_refuses_is_a_failed_rollback_run(app):
    scenario(app)
    store = Store(app)
    store.refuse = RegistryError(Failure.UNAUTHORIZED, "localhost:5000: push refused (403)")
    result = roll_back(app, store)
    (run,) = result.runs
    assert run.status == RunStatus.FAILED
    assert run.reason == "the registry refused the tag move: localhost:5000: push refused (403)"
    assert result.decision.outcome == Outcome.NOT_ROLLED_BACK
    assert app.registry.digests[LATEST] == NEW_IMAGE
