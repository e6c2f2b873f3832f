"""The one receive (shared.service_layer.ingest): every kind of arrival, from every sender, gets its
decision there."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.adapters.ingress.dockerhub import from_dockerhub
from shared.domain.events import ImagePushed, Rejected
from shared.domain.vocabulary import EventSource, Outcome
from shared.service_layer.dispatch import DispatchIncomplete
from shared.service_layer.ingest import Ingest
from tests.fakes import FakeApp

NOW = datetime(2026, 12, 1, tzinfo=UTC)
DIGEST = "sha256:" + "c" * 64


@pytest.fixture
def app(tmp_path):
    return FakeApp(tmp_path)


def receive(app, arrivals):
    return Ingest(app.registry, app.dispatcher, app.decisions).receive(arrivals)


def test_a_rejected_payload_is_recorded_and_not_marked_as_decided(app):
    (decision,) = receive(app, [Rejected("(envelope)", "not JSON", EventSource.DISTRIBUTION)])
    assert decision.outcome == Outcome.REJECTED and decision.reason == "not JSON"
    assert app.decisions.decisions == [decision]
    assert app.decisions.seen("(envelope)") is None  # the next envelope is read again


def test_a_rebuild_and_a_push_of_one_image_are_decided_by_their_rules(app):
    pushed = ImagePushed("e1", "localhost:5000", "base", "1", DIGEST, NOW, EventSource.DISTRIBUTION)
    rebuild = ImagePushed("rebuild-1", "localhost:5000", "base", "1", DIGEST, NOW, EventSource.REBUILD)
    first, second = receive(app, [pushed, rebuild])
    assert first.outcome == Outcome.NO_DEPENDENTS and second.outcome == Outcome.NO_DEPENDENTS
    assert [d.source for d in app.decisions.decisions] == [EventSource.DISTRIBUTION, EventSource.REBUILD]


def test_a_push_without_a_digest_has_it_read_and_once_only(app):
    body = {"push_data": {"tag": "1", "pushed_at": 1764460800}, "repository": {"repo_name": "team/base"}}
    app.registry.digests["docker.io/team/base:1"] = DIGEST
    push = from_dockerhub(body)
    (decision,) = receive(app, [push])
    assert decision.digest == DIGEST and decision.source == EventSource.DOCKERHUB
    assert receive(app, [push]) == [decision]  # the redelivery gets the first decision


def test_one_failing_arrival_leaves_the_others_decided_and_asks_for_the_batch_again(app):
    pushed = ImagePushed("e2", "localhost:5000", "base", "1", DIGEST, NOW, EventSource.DISTRIBUTION)
    rejected = Rejected("(harbor payload)", "no resources", EventSource.HARBOR)
    dependents = app.index.dependents

    def storage_down(base):
        raise OSError("storage down")

    app.index.dependents = storage_down
    with pytest.raises(DispatchIncomplete, match=r"1 event\(s\) could not be dispatched \(OSError\)"):
        receive(app, [pushed, rejected])
    app.index.dependents = dependents
    assert [d.outcome for d in app.decisions.decisions] == [Outcome.REJECTED]
