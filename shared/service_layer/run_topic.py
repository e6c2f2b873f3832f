"""Run events to an Event Grid custom topic (BASETRIGGER_RUN_EVENTS_TOPIC), for other automation
to subscribe to: `Basetrigger.Run.Started` and `Basetrigger.Run.Ended` (Held included), subject
`/tasks/<task>/runs/<run>` (`/builds/<run>` for a quick build), data as a notification's body.

Like notifications, publishing never blocks or fails a build: the build's path only hands the event
to a background thread, the SDK retries within bounded timeouts, and a publish that still fails is
logged and recorded in the decision log. It is best effort: events are not stored first, so one in
flight when the process ends is lost; a run taken over by a second worker may publish its start
again, with the same id (`<run>.started`), as Event Grid itself may deliver twice.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

from shared.domain.decisions import Decision
from shared.domain.notifications import STARTED, run_event
from shared.domain.runs import Run
from shared.domain.vocabulary import EventSource, Outcome, utc_now
from shared.service_layer.ports import DecisionLog, RunEventPublisher

log = logging.getLogger(__name__)

BACKLOG = 1000
EVENT_TYPES = {True: "Basetrigger.Run.Started", False: "Basetrigger.Run.Ended"}


class TopicRunEvents:
    def __init__(self, publisher: RunEventPublisher, decisions: DecisionLog):
        self.publisher = publisher
        self.decisions = decisions
        self._backlog: queue.Queue[tuple[str, str, str, dict[str, Any]]] = queue.Queue(maxsize=BACKLOG)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run_changed(self, run: Run) -> None:
        try:
            found = run_event(run)
            if found is None:
                return
            event, body = found
            subject = f"/tasks/{run.task}/runs/{run.run_id}" if run.task else f"/builds/{run.run_id}"
            self._backlog.put_nowait((body["id"], EVENT_TYPES[event == STARTED], subject, body["run"]))
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._publish_backlog, daemon=True,
                                                    name="run-events-topic")
                    self._thread.start()
        except queue.Full:
            log.warning("run events backlog full; the event of run %s is not published", run.run_id)
        except Exception:
            log.warning("the event of run %s is not published", run.run_id, exc_info=True)

    def _publish_backlog(self) -> None:
        while True:
            try:
                event_id, event_type, subject, data = self._backlog.get(timeout=60)
            except queue.Empty:
                return
            try:
                self.publish(event_id, event_type, subject, data)
            finally:
                self._backlog.task_done()

    def publish(self, event_id: str, event_type: str, subject: str, data: dict[str, Any]) -> bool:
        try:
            self.publisher.publish(event_id, event_type, subject, data)
            return True
        except Exception as exc:
            reason = f"run event {event_id} not published to the Event Grid topic: {type(exc).__name__}"
            log.warning("%s", reason, exc_info=True)
            try:
                self.decisions.record(Decision(f"{event_id}:topic:{utc_now().isoformat()}",
                                               EventSource.NOTIFICATION, Outcome.NOTIFICATION_FAILED,
                                               reason, runs=[data["id"]]), mark_seen=False)
            except Exception:
                log.warning("could not record that %s failed", event_id, exc_info=True)
            return False

    def join(self) -> None:
        """Wait until every event handed over so far was published or given up."""
        self._backlog.join()
