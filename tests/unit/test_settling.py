"""Settle windows on fakes: a base whose digest keeps moving starts one wave on its newest digest once
it has been still for its window; redeliveries and repeated passes start nothing more."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.domain.events import ImagePushed
from shared.domain.settling import SettleError, SettleSettings
from shared.domain.vocabulary import EventSource, Outcome, utc_now
from tests.fakes import FakeApp
from tests.unit.test_waves import REGISTRY, add_task, ref

WINDOW = 600


def digest(n: int) -> str:
    return "sha256:" + f"{n:064x}"


def pushed(n: int, event_id: str | None = None,
           source: EventSource = EventSource.DISTRIBUTION) -> ImagePushed:
    return ImagePushed(event_id or f"push-{n}", REGISTRY, "base", "latest", digest(n), datetime.now(UTC),
                       source)


@pytest.fixture
def app(tmp_path):
    app = FakeApp(tmp_path, REGISTRY)
    app.settling.settings = SettleSettings(0, ((REGISTRY, WINDOW),))
    add_task(app, "app", ["base"])
    return app


def test_three_moves_within_the_window_start_one_wave_on_the_last_digest(app):
    for n in (1, 2, 3):
        decision = app.dispatcher.handle(pushed(n))
        assert decision.outcome == Outcome.SETTLING and decision.reason.startswith("settling until ")
        assert decision.runs == []
    assert app.runs.all() == [] and app.queue.sent == []
    assert app.dispatcher.release_settled(utc_now()) == []  # not still for long enough yet

    (started,) = app.dispatcher.release_settled(utc_now() + timedelta(seconds=WINDOW + 1))
    assert started.outcome == Outcome.QUEUED and started.digest == digest(3)
    (run,) = app.runs.all()
    assert run.cause == f"{ref('base')}@{digest(3)}" and run.wave_id
    assert app.dispatcher.release_settled(utc_now() + timedelta(seconds=2 * WINDOW)) == []  # nothing left
    assert len(app.runs.all()) == 1


def test_redeliveries_and_a_pass_that_died_start_nothing_more(app):
    first = app.dispatcher.handle(pushed(1))
    assert app.dispatcher.handle(pushed(1)) == first  # the same event again: its decision
    again = app.dispatcher.handle(pushed(1, event_id="per-platform-or-tag-delivery"))  # same digest
    assert again.outcome == Outcome.SETTLING and "2 deliveries folded in" in again.reason
    (settling,) = app.settling_store.all()
    assert settling.moved_at <= utc_now() and settling.deliveries == 2
    later = utc_now() + timedelta(seconds=WINDOW + 1)
    # A pass that dispatched the settled push and died before removing the row...
    app.dispatcher.handle(settling.event(later), settle=False)
    # ...and the next pass: the same event id, decided once, so still one run.
    (decision,) = app.dispatcher.release_settled(later)
    assert decision.outcome == Outcome.QUEUED and len(app.runs.all()) == 1
    assert app.settling_store.all() == []


def test_a_push_during_the_dispatch_keeps_its_row_and_settles_again(app):
    app.dispatcher.handle(pushed(1))
    later = utc_now() + timedelta(seconds=WINDOW + 1)

    def dispatch_while_it_moves(event: ImagePushed):
        app.dispatcher.handle(pushed(2))  # moved while the settled push of 1 was dispatched
        return app.dispatcher.handle(event, settle=False)

    app.settling.release_due(dispatch_while_it_moves, later)
    (row,) = app.settling_store.all()
    assert row.digest == digest(2)
    (decision,) = app.dispatcher.release_settled(utc_now() + timedelta(seconds=WINDOW + 1))
    # the run queued for 1 has not started: 2 coalesces into it (it builds on the newest base)
    assert (decision.digest, decision.outcome) == (digest(2), Outcome.COALESCED)
    assert len(app.runs.all()) == 1


def test_a_registry_without_a_window_and_a_rebuild_are_dispatched_at_once(app):
    app.settling.settings = SettleSettings(0, (("other.example.com", WINDOW),))
    assert app.dispatcher.handle(pushed(1)).outcome == Outcome.QUEUED
    app.settling.settings = SettleSettings(WINDOW)
    assert app.dispatcher.rebuild(pushed(2, "rebuild-1", EventSource.REBUILD)).outcome in (
        Outcome.QUEUED, Outcome.COALESCED)


def test_settings_are_parsed_per_registry_and_mistakes_said():
    settings = SettleSettings.parse("60, registry-1.docker.io=900, *.azurecr.io=0")
    assert settings.seconds_for("registry-1.docker.io") == 900
    assert settings.seconds_for("me.azurecr.io") == 0
    assert settings.seconds_for("ghcr.io") == 60
    assert SettleSettings.parse("") == SettleSettings()
    for bad in ("soon", "ghcr.io=-1", "1,2", f"{24 * 3600 + 1}"):
        with pytest.raises(SettleError, match="BASETRIGGER_SETTLE_SECONDS"):
            SettleSettings.parse(bad)
