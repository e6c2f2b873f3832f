"""Run notifications to a task's `--update-trigger-endpoint`: a JSON POST when a run starts and
when it ends (Succeeded, Failed, Canceled…, or Held by its wave's circuit breaker).

A notification never blocks or fails a build. The build's path only stores it in the outbox (one
storage write, errors logged and swallowed) and hands it to a background thread (one per shard of
tasks, so a task's notifications go out in order); it POSTs with bounded timeouts and retries with
back-off, and a notification that never got through is
recorded in the decision log (`notification-failed`). The outbox row is created once per run and
event, so a redelivered run message or a second attempt of the run notifies nothing again; a
process that dies before the POST leaves the row pending, and housekeeping sends it again.
Delivery is therefore at least once: a receiver may see a notification twice (a crash between the
POST and its record) and tells by the `id` in the body (the `X-Basetrigger-Delivery` header).
"""

from __future__ import annotations

import logging
import queue
import threading
import zlib
from collections.abc import Callable, Sequence
from datetime import timedelta

from shared.domain.decisions import Decision, TaskDecision
from shared.domain.notifications import Notification, endpoint_label, notification_for
from shared.domain.runs import Run
from shared.domain.tasks import TaskNotFound
from shared.domain.vocabulary import EventSource, Outcome, utc_now
from shared.service_layer.ports import (
    DecisionLog,
    DeliveryError,
    NotificationOutbox,
    NotificationSender,
    RunEvents,
    TaskRepository,
)

log = logging.getLogger(__name__)

# Waits between tries (the first try is at once): 4 tries within about a minute.
RETRY_DELAYS = (2.0, 10.0, 30.0)
# A pending notification not tried for this long lost its sender (the process ended): sent again.
RESEND_AFTER = timedelta(minutes=3)
SENDER_THREADS = 8
# Beyond this many waiting, a notification stays pending in the outbox for housekeeping.
BACKLOG = 1000

DELIVERED, FAILED, DROPPED = "delivered", "failed", "dropped"


class NoRunEvents:
    """Nobody listens (unit tests, a worker built without notifications)."""

    def run_changed(self, run: Run) -> None:
        return None


class FanOut:
    """Several listeners, each called whatever the others do."""

    def __init__(self, listeners: Sequence[RunEvents]):
        self.listeners = list(listeners)

    def run_changed(self, run: Run) -> None:
        for listener in self.listeners:
            try:
                listener.run_changed(run)
            except Exception:  # a listener must not raise; if one does, the build goes on
                log.warning("run event listener %s failed", type(listener).__name__, exc_info=True)


class RunNotifier:
    def __init__(self, tasks: TaskRepository, outbox: NotificationOutbox, sender: NotificationSender,
                 decisions: DecisionLog, retry_delays: Sequence[float] = RETRY_DELAYS,
                 wait: Callable[[float], object] | None = None):
        self.tasks = tasks
        self.outbox = outbox
        self.sender = sender
        self.decisions = decisions
        self.retry_delays = tuple(retry_delays)
        self._wait = wait or threading.Event().wait
        # One queue and sender thread per shard of tasks: a task's notifications go out in order
        # (a run's start before its end), and an endpoint that hangs holds up only its shard.
        self._backlogs: list[queue.Queue[Notification]] = [
            queue.Queue(maxsize=BACKLOG // SENDER_THREADS) for _ in range(SENDER_THREADS)]
        self._threads: list[threading.Thread | None] = [None] * SENDER_THREADS
        self._lock = threading.Lock()

    # ---- on the build's path: store and hand over, never raise, never wait on the network ----
    def run_changed(self, run: Run) -> None:
        try:
            notification = notification_for(run)
            if notification is None:
                return
            try:
                task = self.tasks.get(notification.task)
            except TaskNotFound:
                return
            if not task.update_trigger_endpoint:
                return
            if not self.outbox.add(notification):
                return  # stored before: this run's notification is sent (or on its way) already
            self._hand_over(notification)
        except Exception:
            log.warning("notification of run %s not stored; it is not sent", run.run_id, exc_info=True)

    def _hand_over(self, notification: Notification) -> None:
        shard = zlib.crc32(notification.task.encode()) % SENDER_THREADS
        try:
            self._backlogs[shard].put_nowait(notification)
        except queue.Full:  # left pending: housekeeping sends it
            log.warning("notification backlog full; %s waits for housekeeping", notification.notification_id)
            return
        with self._lock:
            thread = self._threads[shard]
            if thread is None or not thread.is_alive():
                thread = threading.Thread(target=self._send_backlog, args=(self._backlogs[shard],),
                                          daemon=True, name=f"notify-{shard}")
                thread.start()
                self._threads[shard] = thread

    def _send_backlog(self, backlog: queue.Queue[Notification]) -> None:
        while True:
            try:
                notification = backlog.get(timeout=60)
            except queue.Empty:
                with self._lock:  # idle: the next hand-over starts a thread again
                    if backlog.empty():
                        self._threads = [None if t is threading.current_thread() else t
                                         for t in self._threads]
                        return
                continue
            try:
                self.deliver(notification)
            except Exception:  # storage failed while recording: it stays pending for housekeeping
                log.warning("notification %s: delivery not recorded", notification.notification_id,
                            exc_info=True)
            finally:
                backlog.task_done()

    def join(self) -> None:
        """Wait until every notification handed over so far has been tried to the end."""
        for backlog in self._backlogs:
            backlog.join()

    # ---- the sending (background threads, housekeeping) ------------------------------------
    def deliver(self, notification: Notification) -> str:
        """Send it now, retrying with back-off; how it ended (delivered, failed, dropped)."""
        try:
            task = self.tasks.get(notification.task)
        except TaskNotFound:
            task = None
        if task is None or not task.update_trigger_endpoint:
            self.outbox.settle(notification.notification_id, DROPPED, 0)
            return DROPPED
        url, secret = task.update_trigger_endpoint, task.update_trigger_secret
        error = ""
        attempts = 0
        for delay in (0.0, *self.retry_delays):
            if delay:
                self._wait(delay)
            attempts += 1
            try:
                self.sender.post(url, notification.headers(secret), notification.body)
            except DeliveryError as exc:
                error = str(exc)
                log.info("notification %s to %s: try %d: %s", notification.notification_id,
                         endpoint_label(url), attempts, error)
                continue
            self.outbox.settle(notification.notification_id, DELIVERED, attempts)
            return DELIVERED
        reason = (f"notification {notification.notification_id} of run {notification.run_id} to "
                  f"{endpoint_label(url)} not delivered after {attempts} tries: {error}")
        self.outbox.settle(notification.notification_id, FAILED, attempts, error)
        failed = Outcome.NOTIFICATION_FAILED
        self.decisions.record(Decision(
            f"{notification.notification_id}:notify:{utc_now().isoformat()}", EventSource.NOTIFICATION,
            failed, reason, runs=[notification.run_id],
            tasks=[TaskDecision(notification.task, failed, reason, notification.run_id)]), mark_seen=False)
        log.warning("%s", reason)
        return FAILED

    def resend_stale(self) -> list[str]:
        """Housekeeping: hand over again what a process that ended left pending."""
        tried_before = utc_now() - RESEND_AFTER
        resent = []
        for notification in self.outbox.stale(tried_before):
            if self.outbox.claim(notification.notification_id, tried_before):
                self._hand_over(notification)
                resent.append(notification.notification_id)
        return resent
