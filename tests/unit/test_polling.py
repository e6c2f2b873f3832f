"""The poller's rules on in-memory ports: one request per base however many tasks share it, a change
dispatched once (overlapping cycles make the same event), first sight, errors and back-off."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from shared.domain.credentials import RegistryCredential
from shared.domain.dependencies import DependencyRow
from shared.domain.manifests import Failure, ManifestInfo, RegistryError
from shared.domain.poll_state import poll_event_id
from shared.domain.tasks import Task
from shared.domain.vocabulary import EventSource, Outcome, TriggerType, Watch
from shared.domain.watch_settings import PollSettings, parse_watch, schedule_for
from shared.service_layer.ingest import Ingest
from shared.service_layer.polling import Poller
from tests.fakes import FakeApp

OLD, NEW = "sha256:" + "1" * 64, "sha256:" + "2" * 64
NOW = datetime(2026, 11, 30, tzinfo=UTC)


class Index:
    def __init__(self, table):
        self.table = table

    def every_row(self):
        return list(self.table.rows.values())


class Bases:
    def __init__(self):
        self.states, self.backoff, self.swept, self.writes = {}, {}, {}, []

    def all(self):
        return dict(self.states)

    def save_many(self, states):
        states = list(states)
        self.writes.append(sorted(s.base for s in states))
        self.states.update({s.base: s for s in states})

    def sweeps(self):
        return dict(self.swept)

    def save_sweeps(self, sweeps):
        self.swept.update(sweeps)

    def remove_many(self, bases):
        for b in bases:
            self.states.pop(b, None)

    def backoffs(self):
        return dict(self.backoff)

    def save_backoff(self, b):
        self.backoff[b.registry] = b


class Registry:
    def __init__(self, digests):
        self.digests, self.calls = dict(digests), []

    def inspect(self, reference, credentials=(), with_platforms=False):
        self.calls.append((reference, tuple(credentials)))
        answer = self.digests[reference]
        if isinstance(answer, RegistryError):
            raise answer
        return ManifestInfo(answer)


def setup(tmp_path, digests, tasks=3, base="quay.io/team/base:1", credentials=()):
    app = FakeApp(tmp_path)
    for n in range(tasks):
        app.table.put_task_fields(DependencyRow(base=base, task=f"t{n}", runtime=True, trigger_enabled=True,
                                                trigger_type=TriggerType.RUNTIME, images=[f"app{n}:v"],
                                                built_digest=OLD, platform="linux"))
        app.task_store.tasks[f"t{n}"] = Task(name=f"t{n}", images=[f"app{n}:v"], context="/x",
                                             credentials=list(credentials))
    registry, bases = Registry(digests), Bases()
    poller = Poller(Index(app.table), app.task_store, bases, registry,
                    Ingest(registry, app.dispatcher, app.decisions), app.decisions,
                    PollSettings(interval_seconds=60, event_registries=("localhost:5000",)),
                    clock=lambda: NOW, rng=random.Random(1))
    return app, poller, registry, bases


def test_one_request_per_base_however_many_tasks_and_one_run_each_on_change(tmp_path):
    base = "quay.io/team/base:1"
    app, poller, registry, bases = setup(tmp_path, {base: OLD})
    first = poller.cycle()
    assert (first.polled, first.requests, first.changed) == (1, 1, 0)  # first sight, as recorded: no event
    registry.digests[base] = NEW
    second = poller.cycle()
    assert (second.requests, second.changed) == (1, 1)
    (decision,) = second.decisions
    assert decision.source == EventSource.POLL and decision.outcome == Outcome.QUEUED
    assert len(decision.runs) == 3
    assert decision.event_id == poll_event_id(base, OLD, NEW)
    # An overlapping cycle that read the old state makes the same event: the first decision stands.
    bases.states[base].digest = OLD
    again = poller.cycle()
    assert again.decisions[0].runs == decision.runs and len(app.queue.sent) == 3


def test_events_registries_are_not_polled_and_digest_pinned_bases_never(tmp_path):
    app, poller, registry, _ = setup(tmp_path, {}, base="localhost:5000/base:1")
    app.table.put_task_fields(DependencyRow(base="quay.io/a@" + OLD, task="t0", runtime=True,
                                            trigger_enabled=True, trigger_type=TriggerType.RUNTIME))
    report = poller.cycle()
    assert (report.bases, report.polled, registry.calls) == (2, 0, [])
    assert {o.watch for o in poller.overview()} == {Watch.EVENTS}


def test_refused_credentials_are_a_decision_that_names_the_task_and_not_the_password(tmp_path):
    base = "quay.io/team/base:1"
    wrong = RegistryCredential.create("quay.io", "ci", "hunter2-wrong")
    refused = RegistryError(Failure.UNAUTHORIZED, "quay.io refused the credentials of user 'ci'")
    app, poller, registry, bases = setup(tmp_path, {base: refused}, tasks=1, credentials=[wrong])
    poller.cycle()
    poller.cycle()  # the same error again is not a new decision
    errors = [d for d in app.decisions.decisions if d.outcome == Outcome.REGISTRY_ERROR]
    assert len(errors) == 1 and "t0" in errors[0].reason and "hunter2" not in errors[0].reason
    assert bases.states[base].error and bases.states[base].digest is None


def test_a_rate_limited_registry_is_backed_off_for_retry_after_and_its_other_bases_wait(tmp_path):
    limited = RegistryError(Failure.RATE_LIMITED, "quay.io asks to slow down (429)", retry_after=600)
    app, poller, registry, bases = setup(tmp_path, {"quay.io/team/base:1": limited})
    app.table.put_task_fields(DependencyRow(base="quay.io/team/base:2", task="t0", runtime=True,
                                            trigger_enabled=True, trigger_type=TriggerType.RUNTIME))
    registry.digests["quay.io/team/base:2"] = OLD
    report = poller.cycle()
    assert report.requests == 1 and report.failed == 2  # the second base waits for the registry
    backoff = bases.backoff["quay.io"]
    assert backoff.failures == 1 and 480 <= (backoff.until - NOW).total_seconds() <= 720  # ±20 % jitter
    assert poller.cycle().requests == 0  # still backing off


def test_a_cycle_writes_only_the_rows_that_changed_and_every_base_still_shows_its_last_check(tmp_path):
    b1, b2, b3, other = "quay.io/team/base:1", "quay.io/team/base:2", "quay.io/team/base:3", "ghcr.io/o/x:1"
    app, poller, registry, bases = setup(tmp_path, {b1: OLD, b2: OLD, b3: OLD, other: OLD}, tasks=1, base=b1)
    for base in (b2, b3, other):
        app.table.put_task_fields(DependencyRow(base=base, task="t0", runtime=True, trigger_enabled=True,
                                                trigger_type=TriggerType.RUNTIME, built_digest=OLD))
    times = [NOW + timedelta(minutes=5 * n) for n in range(5)]
    clock = iter(times)
    poller.clock = lambda: next(clock)

    def shown():
        return {o.base: o.to_dict() for o in poller.overview()}

    def checked(at):
        return at.isoformat().replace("+00:00", "Z")

    first = poller.cycle()
    assert (first.written, bases.writes[-1]) == (4, sorted([b1, b2, b3, other]))  # first sight
    steady = poller.cycle()
    assert (steady.checked, steady.written, bases.writes[-1]) == (4, 0, [])
    assert {b["last_checked"] for b in shown().values()} == {checked(times[1])}

    registry.digests[b2] = NEW
    registry.digests[b3] = RegistryError(Failure.NOT_FOUND, "quay.io has no team/base:3")
    third = poller.cycle()
    assert (third.changed, third.written, bases.writes[-1]) == (1, 2, [b2, b3])
    view = shown()
    assert view[b1]["last_checked"] == view[other]["last_checked"] == checked(times[2])
    assert (view[b2]["digest"], view[b2]["last_checked"], view[b2]["last_changed"]) == \
        (NEW, checked(times[2]), checked(times[2]))
    # Its registry was swept, but b3 failed: its last check is still the last one it answered.
    assert (view[b3]["digest"], view[b3]["last_checked"]) == (OLD, checked(times[1]))
    assert view[b3]["last_error"] == "quay.io has no team/base:3"

    again = poller.cycle()  # the same error: nothing to write, and b3 is not made fresher
    assert (again.written, bases.writes[-1]) == (0, [])
    view = shown()
    assert (view[b3]["last_checked"], view[b1]["last_checked"]) == (checked(times[1]), checked(times[3]))

    registry.digests[b3] = OLD
    healed = poller.cycle()
    assert (healed.changed, bases.writes[-1]) == (0, [b3])
    assert (shown()[b3]["last_checked"], shown()[b3]["last_error"]) == (checked(times[4]), None)


def test_watch_rules_and_schedules():
    rules = parse_watch("*.azurecr.io=both, quay.io=events")
    settings = PollSettings(rules=rules, event_registries=("localhost:5000",))
    assert settings.mode("x.azurecr.io") == Watch.BOTH and settings.mode("quay.io") == Watch.EVENTS
    assert settings.mode("localhost:5000") == Watch.EVENTS and settings.mode("docker.io") == Watch.POLL
    assert schedule_for(300) == "0 */5 * * * *" and schedule_for(2) == "*/2 * * * * *"


def test_an_error_for_one_image_says_nothing_about_its_registry(tmp_path):
    # One definition of a registry-wide failure (RegistryError.registry_wide), which the poller
    # acts on: an error answer for one manifest neither stops the registry's other bases this cycle
    # nor backs the registry off (manifests.registry_wide once counted it; polling did not).
    broken = RegistryError(Failure.ERROR, "quay.io answered 500 for team/base:1")
    assert not broken.registry_wide
    assert RegistryError(Failure.RATE_LIMITED, "429").registry_wide
    assert RegistryError(Failure.UNREACHABLE, "connection refused").registry_wide
    app, poller, registry, bases = setup(tmp_path, {"quay.io/team/base:1": broken})
    app.table.put_task_fields(DependencyRow(base="quay.io/team/base:2", task="t0", runtime=True,
                                            trigger_enabled=True, trigger_type=TriggerType.RUNTIME))
    registry.digests["quay.io/team/base:2"] = OLD
    report = poller.cycle()
    assert (report.requests, report.checked, report.failed) == (2, 1, 1)
    assert "quay.io" not in bases.backoff


def test_a_change_that_cannot_be_dispatched_keeps_the_old_digest_and_says_why(tmp_path):
    base = "quay.io/team/base:1"
    app, poller, registry, bases = setup(tmp_path, {base: OLD})
    poller.cycle()
    registry.digests[base] = NEW

    def storage_down(reference):
        raise OSError("storage down")

    app.index.dependents = storage_down
    report = poller.cycle()
    assert (report.changed, report.failed) == (0, 1)
    state = bases.states[base]
    assert state.digest == OLD  # the next cycle sees the change again
    assert state.error == f"the change to {NEW} could not be dispatched: OSError; retried next cycle"
