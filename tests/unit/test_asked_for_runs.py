"""What the HTTP handlers used to do themselves, now in the service layer (on in-memory fakes):
`base rebuild` builds its own event (Ingest.rebuild), and a page of runs checks its continuation
(Scheduler.newest) before any storage read."""

from __future__ import annotations

import pytest

from shared.domain.events import MalformedEvent
from shared.domain.image_ref import InvalidReference
from shared.domain.vocabulary import EventSource, Outcome
from shared.service_layer.ingest import UNRESOLVED_DIGEST, Ingest
from shared.service_layer.scheduling import InvalidContinuation
from tests.fakes import FakeApp
from tests.unit.test_waves import DIGEST, REGISTRY, add_task, ref


@pytest.fixture
def app(tmp_path):
    return FakeApp(tmp_path, REGISTRY)


def ingest(app: FakeApp) -> Ingest:
    return Ingest(app.registry, app.dispatcher, app.decisions)


def test_a_rebuild_records_the_digest_the_tag_points_at_now(app):
    add_task(app, "app", ["base"])
    app.registry.digests[ref("base")] = DIGEST
    decision = ingest(app).rebuild(f"{REGISTRY}/base")
    assert (decision.outcome, decision.source) == (Outcome.QUEUED, EventSource.REBUILD)
    assert decision.digest == DIGEST
    assert decision.event_id.startswith("rebuild-") and len(decision.runs) == 1


def test_a_rebuild_takes_a_digest_given_and_records_a_placeholder_when_none_can_be_read(app):
    add_task(app, "app", ["base"])
    given = "sha256:" + "2" * 64
    assert ingest(app).rebuild(f"{REGISTRY}/base:latest", given).digest == given
    assert ingest(app).rebuild(f"{REGISTRY}/base:latest@{given}").digest == given
    unresolved = ingest(app).rebuild(f"{REGISTRY}/base:latest")  # the fake registry knows no digest
    assert unresolved.digest == UNRESOLVED_DIGEST


@pytest.mark.parametrize(("image", "digest", "error"), [
    ("Not/Valid", None, InvalidReference),
    (f"{REGISTRY}/base", "sha256:xyz", MalformedEvent),
])
def test_a_rebuild_of_no_image_or_no_digest_is_refused_before_any_decision(app, image, digest, error):
    with pytest.raises(error):
        ingest(app).rebuild(image, digest)
    assert app.decisions.recent(top=10) == []


@pytest.mark.parametrize("after", ["w1", "da\u00b2", "da", "x" * 300])
def test_a_continuation_that_is_no_run_id_is_the_callers_mistake(app, after):
    with pytest.raises(InvalidContinuation, match="is not a run id from a previous page"):
        app.scheduler.newest(after=after)


def test_a_run_id_continues_the_list(app):
    add_task(app, "app", [])
    first = app.scheduler.run_task("app")
    second = app.scheduler.run_task("app")
    runs, _ = app.scheduler.newest(top=1)
    assert [r.run_id for r in runs] == [second.run_id]
    rest, _ = app.scheduler.newest(top=5, after=second.run_id)
    assert [r.run_id for r in rest] == [first.run_id]

