"""The dispatch rules, one by one, on index rows built in memory."""

import pytest

from shared.domain.dependencies import DependencyRow
from shared.domain.images import render
from shared.domain.rebuild_graph import is_own_output
from shared.domain.runs import RunIds
from shared.domain.vocabulary import Outcome
from shared.service_layer.dispatch import classify

BASE = "localhost:5000/baseimages/node:9-alpine"
NEW, OLD = "sha256:" + "1" * 64, "sha256:" + "0" * 64


def row(**fields):
    defaults = dict(base=BASE, task="app", runtime=True, trigger_enabled=True, trigger_type="Runtime",
                    images=["helloworld:{{.Run.ID}}"], built_digest=OLD)
    defaults.update(fields)
    return DependencyRow(**defaults)


def outcome(r, pending_is_queued=False, digest=NEW, pushed=BASE):
    return classify(r, digest, pushed, "localhost:5000", pending_is_queued)[0]


def test_a_new_digest_queues_a_run():
    assert outcome(row()) == Outcome.QUEUED


def test_a_task_that_never_saw_the_base_queues_a_run():
    assert outcome(row(built_digest=None)) == Outcome.QUEUED


def test_the_same_digest_is_unchanged():
    assert outcome(row(), digest=OLD) == Outcome.DIGEST_UNCHANGED


def test_disabled_trigger_wins_over_everything():
    assert outcome(row(trigger_enabled=False)) == Outcome.TRIGGER_DISABLED


@pytest.mark.parametrize("trigger_type,runtime,expected", [
    ("Runtime", False, Outcome.NOT_RUNTIME), ("Runtime", True, Outcome.QUEUED),
    ("All", False, Outcome.QUEUED), ("All", True, Outcome.QUEUED),
])
def test_trigger_type_decides_whether_build_stage_bases_count(trigger_type, runtime, expected):
    assert outcome(row(trigger_type=trigger_type, runtime=runtime)) == expected


def test_a_digest_already_triggered_is_not_queued_again():
    assert outcome(row(triggered_digest=NEW, pending_run_id="da3"), pending_is_queued=True) \
        == Outcome.ALREADY_TRIGGERED


def test_a_queued_run_absorbs_a_newer_digest():
    coalescing = row(triggered_digest=OLD, pending_run_id="da3")
    assert outcome(coalescing, pending_is_queued=True) == Outcome.COALESCED


def test_a_pending_run_that_already_started_does_not_absorb():
    assert outcome(row(triggered_digest=OLD, pending_run_id="da3"), pending_is_queued=False) == Outcome.QUEUED


def test_a_task_is_not_triggered_by_its_own_output():
    own = row(images=["baseimages/node:9-alpine"])
    assert outcome(own) == Outcome.OWN_OUTPUT


def test_render_fills_run_id_and_default_registry():
    assert render("helloworld:{{.Run.ID}}", "da7", "localhost:5000") == "localhost:5000/helloworld:da7"
    assert render("{{.Run.Registry}}/x:{{ .Run.ID }}", "da7", "r.io") == "r.io/x:da7"
    assert render("other.io/x:1", "da7", "localhost:5000") == "other.io/x:1"


def test_own_output_ignores_per_run_tags():
    assert not is_own_output(["node:{{.Run.ID}}"], "localhost:5000/node:da1", "localhost:5000")
    assert is_own_output(["node:9"], "localhost:5000/node:9", "localhost:5000")


def test_run_ids_are_prefix_and_counter_and_sort_newest_first():
    ids = RunIds("da")
    assert ids.format(12) == "da12" and ids.counter("da12") == 12
    assert ids.inverted("da12") < ids.inverted("da9")  # newer run, smaller key
    with pytest.raises(LookupError):
        ids.counter("xx1")
