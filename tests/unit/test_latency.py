"""Patch latency on in-memory fakes: a scripted scenario with fixed timestamps, played through the
dispatcher and the worker, and the report's figures checked against those timestamps by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.domain.builds import BuildResult
from shared.domain.events import ImagePushed
from shared.domain.latency import InvalidDuration, parse_duration, percentile
from shared.domain.tasks import Dependency, Task
from shared.domain.vocabulary import EventSource, RunStatus
from shared.service_layer.latency import PatchLatency
from shared.service_layer.staleness import StalenessReport
from tests.fakes import FakeApp

REGISTRY = "localhost:5000"
BASE, OTHER = f"{REGISTRY}/base:1", f"{REGISTRY}/other:1"
D0, D1, D2 = ("sha256:" + c * 64 for c in "012")
T0 = datetime(2026, 1, 1, tzinfo=UTC)
H = timedelta(hours=1)


@pytest.fixture
def app(tmp_path):
    return FakeApp(tmp_path, REGISTRY)


def add_task(app: FakeApp, name: str, base: str) -> None:
    task = Task(name=name, images=[f"{name}:{{{{.Run.ID}}}}"], context=f"/ctx/{name}",
                dependencies=[Dependency(base, D0, True)])
    app.sources.dockerfiles[task.context] = f"FROM {base}\n"
    app.task_store.create(task)
    app.index.sync_task(task, previous=[])


def push(app: FakeApp, base: str, digest: str, at: datetime) -> list[str]:
    repository, tag = base.removeprefix(f"{REGISTRY}/").split(":")
    decision = app.dispatcher.handle(ImagePushed(f"{base}-{digest}", REGISTRY, repository, tag, digest, at,
                                                 EventSource.DISTRIBUTION))
    return decision.runs


def build(app: FakeApp, run_id: str, base: str, digest: str, built: datetime, pushed: datetime) -> None:
    app.builder.result = BuildResult(RunStatus.SUCCEEDED, output_digest="sha256:" + "f" * 64,
                                     base_digests={base: digest}, built_at=built, pushed_at=pushed)
    assert app.worker.execute(run_id) is not None


def scenario(app: FakeApp) -> None:
    """base pushed D1 at T0: app pushed 1h later, web 3h later (latency 3h).
    base pushed D2 at T0+10h: app 30m later, web 14h later (latency 14h: web misses a 12h SLO).
    other pushed D1 at T0+20h: api still queued at T0+40h (open for 20h)."""
    add_task(app, "app", BASE)
    add_task(app, "web", BASE)
    add_task(app, "api", OTHER)
    app_run, web_run = push(app, BASE, D1, T0)
    build(app, app_run, BASE, D1, T0 + 0.8 * H, T0 + H)
    build(app, web_run, BASE, D1, T0 + 2 * H, T0 + 3 * H)
    app_run, web_run = push(app, BASE, D2, T0 + 10 * H)
    build(app, app_run, BASE, D2, T0 + 10.2 * H, T0 + 10.5 * H)
    build(app, web_run, BASE, D2, T0 + 23 * H, T0 + 24 * H)
    (api_run,) = push(app, OTHER, D1, T0 + 20 * H)
    assert app.runs.get(api_run)[0].status == RunStatus.QUEUED


def test_the_report_figures_match_the_scripted_timestamps(app):
    scenario(app)
    now = T0 + 40 * H
    report = PatchLatency(app.wave_store, app.runs).report(timedelta(days=7), 12 * H, now=now).to_dict()

    assert report["overall"] == {"events": 3, "closed": 2, "p50_seconds": 3 * 3600, "p95_seconds": 14 * 3600,
                                 "worst_seconds": 20 * 3600, "missed_slo": 2}
    assert report["bases"] == [
        {"base": BASE, "events": 2, "closed": 2, "p50_seconds": 3 * 3600, "p95_seconds": 14 * 3600,
         "worst_seconds": 14 * 3600, "missed_slo": 1},
        {"base": OTHER, "events": 1, "closed": 0, "p50_seconds": None, "p95_seconds": None,
         "worst_seconds": 20 * 3600, "missed_slo": 1}]
    assert [(m["task"], m["base"], m["why"], m["exposure_seconds"]) for m in report["missed"]] == [
        ("web", BASE, "late", 14 * 3600), ("api", OTHER, "open", 20 * 3600)]
    first = report["events"][0]
    assert (first["base"], first["digest"], first["pushed"], first["last_pushed"],
            first["latency_seconds"]) == (BASE, D1, "2026-01-01T00:00:00Z", "2026-01-01T03:00:00Z", 3 * 3600)
    app_times = next(d for d in first["dependents"] if d["task"] == "app")
    assert (app_times["built"], app_times["pushed"], app_times["status"]) == \
        ("2026-01-01T00:48:00Z", "2026-01-01T01:00:00Z", "Succeeded")
    assert app_times["queued"] and app_times["started"]  # the real moments the fakes recorded
    assert first["received"] and first["planned"]


def test_the_waves_keep_the_push_and_receipt_times(app):
    add_task(app, "app", BASE)
    before = datetime.now(UTC)
    push(app, BASE, D1, T0)
    (wave,), _ = app.wave_store.newest()
    assert wave.pushed_at == T0
    assert wave.received_at is not None and before <= wave.received_at <= wave.created_at


def test_a_tighter_slo_and_the_dependents_still_on_an_old_digest(app):
    scenario(app)
    # The registry says `base` moved on to a third digest nobody built yet: both its tasks are stale.
    d3 = "sha256:" + "3" * 64
    app.registry.digests = {BASE: d3, OTHER: D1}
    staleness = StalenessReport(app.task_store, app.runs, app.decisions, app.registry, app.wave_store)
    report = PatchLatency(app.wave_store, app.runs, staleness).report(timedelta(days=7), 2 * H,
                                                                      now=T0 + 40 * H).to_dict()
    assert report["overall"]["missed_slo"] == 3
    assert [(m["task"], m["why"], m["exposure_seconds"]) for m in report["missed"]][:3] == [
        ("web", "late", 3 * 3600), ("web", "late", 14 * 3600), ("api", "open", 20 * 3600)]
    stale = sorted(m["task"] for m in report["missed"][3:])
    assert stale == ["app", "web"] and {m["why"] for m in report["missed"][3:]} == {"stale"}


@pytest.mark.parametrize("text", ["7", "d", "-1d", "0h", "12 h", "1y", "7d1", "91d", "1000000w"])
def test_bad_durations_are_refused_with_a_clear_message(text):
    with pytest.raises(InvalidDuration, match="since"):
        parse_duration(text, "since", timedelta(days=7))


def test_durations_and_percentiles():
    assert parse_duration("1d12h", "slo", H) == 36 * H
    assert parse_duration(None, "slo", H) == H
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 0.5) == 3.0
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 0.95) == 5.0
    assert percentile([], 0.5) is None
