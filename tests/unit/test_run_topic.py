"""Run events to the Event Grid topic on fakes: a run's start and end are published with the run's
id and subject, a topic that fails is recorded and never reaches the build; the app publishes only
when the topic's setting is there."""

from __future__ import annotations

import pytest

from shared.domain.builds import BuildResult
from shared.domain.tasks import Dependency, Task
from shared.domain.vocabulary import Outcome, RunStatus
from shared.service_layer.notifications import FanOut
from shared.service_layer.run_topic import TopicRunEvents
from tests.fakes import FakeApp

REGISTRY = "localhost:5000"
BASE = f"{REGISTRY}/base:1"


class RecordingPublisher:
    def __init__(self, fail: bool = False):
        self.events: list[tuple[str, str, str, dict]] = []
        self.fail = fail

    def publish(self, event_id, event_type, subject, data) -> None:
        if self.fail:
            raise ConnectionError("topic unreachable")
        self.events.append((event_id, event_type, subject, data))


@pytest.fixture
def app(tmp_path):
    app = FakeApp(tmp_path, REGISTRY)
    app.sources.dockerfile = f"FROM {BASE}\nRUN true\n"
    task = Task(name="app", images=["app:{{.Run.ID}}"], context="/ctx", dependencies=[Dependency(BASE)])
    app.task_store.create(task)
    app.index.sync_task(task, previous=[])
    return app


def with_topic(app, publisher) -> TopicRunEvents:
    topic = TopicRunEvents(publisher, app.decisions)
    app.worker.events = app.waves.events = FanOut([app.notifier, topic])
    return topic


def test_a_run_s_start_and_end_are_published(app):
    publisher = RecordingPublisher()
    topic = with_topic(app, publisher)
    app.builder.result = BuildResult(RunStatus.FAILED, reason="RUN false")
    run = app.worker.execute(app.scheduler.run_task("app").run_id)
    topic.join()
    assert [(e[0], e[1], e[2], e[3]["status"]) for e in publisher.events] == [
        (f"{run.run_id}.started", "Basetrigger.Run.Started", f"/tasks/app/runs/{run.run_id}", "Running"),
        (f"{run.run_id}.ended", "Basetrigger.Run.Ended", f"/tasks/app/runs/{run.run_id}", "Failed")]


def test_a_topic_that_fails_is_recorded_and_the_build_goes_on(app):
    topic = with_topic(app, RecordingPublisher(fail=True))
    run = app.worker.execute(app.scheduler.run_task("app").run_id)
    topic.join()
    assert run.status == RunStatus.SUCCEEDED
    failed = [d for d in app.decisions.decisions if d.outcome == Outcome.NOTIFICATION_FAILED]
    assert len(failed) == 2 and all("Event Grid topic" in d.reason for d in failed)
    assert {d.runs[0] for d in failed} == {run.run_id}


def test_the_app_publishes_to_a_topic_only_when_its_setting_names_one():
    from shared import config
    from shared.bootstrap import Services

    env = {"AzureWebJobsStorage": "UseDevelopmentStorage=true"}
    plain = Services(config.load(env))
    assert not [x for x in plain.run_events.listeners if isinstance(x, TopicRunEvents)]
    topic = "https://evgt-x.westeurope-1.eventgrid.azure.net/api/events"
    with_topic_setting = Services(config.load({**env, "BASETRIGGER_RUN_EVENTS_TOPIC": topic}))
    (published,) = [x for x in with_topic_setting.run_events.listeners if isinstance(x, TopicRunEvents)]
    assert published.publisher.endpoint == topic
