"""Applying a task's base change policy (shared.domain.change_policy) to a run of a wave, in the worker.

Where: the classification of a base change is computed by the wave's first worker, before its build
(shared.service_layer.base_changes.WaveChanges), never at dispatch (dispatch must stay fast). So the
policy is applied there too, right after the change is known and before anything is built:

- skip: the run ends Canceled, its reason and a decision (`identical-content`, source `wave`) say
  why; the task is recorded as built on the new digest (its dependencies and index rows, as a build
  records them), so it is not reported stale; what the wave would have built on its output is not
  built either (its base did not change).
- hold: the wave is Held (the decision `held` says which task asked and how to approve), the run
  goes back to Held and unreleased, and its places are given back. `wave resume` is the approval:
  it queues the run again (WaveCoordinator.resume), and the worker that gets it finds the hold
  decision recorded and the wave Active again, so it builds.

Every step is idempotent and ordered so that a crash between two of them leaves the run to be judged
again by the queue's next delivery: the wave Held first (a held wave approves nothing), the decision,
then the run and its places.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from shared.domain.change_policy import Action, PolicyVerdict, judge
from shared.domain.decisions import Decision, TaskDecision
from shared.domain.events import pushed_content
from shared.domain.platforms import normalized_or_given
from shared.domain.runs import Run
from shared.domain.tasks import Dependency, Task
from shared.domain.vocabulary import EventSource, Outcome, RunStatus, Trigger, WaveState
from shared.domain.waves import Member, Wave, WaveConflict, WaveNotFound
from shared.service_layer.ports import DecisionLog, RunRepository
from shared.service_layer.runs import transition
from shared.service_layer.waves import WaveCoordinator

log = logging.getLogger(__name__)

SAVE_ROUNDS = 10


def hold_decision_id(wave_id: str) -> str:
    """The id of the decision that a base change policy held `wave_id` (one per wave)."""
    return f"{wave_id}:base-change-held"


class ChangePolicies:
    def __init__(self, runs: RunRepository, waves: WaveCoordinator, decisions: DecisionLog):
        self.runs = runs
        self.waves = waves
        self.decisions = decisions

    def judge(self, run: Run, task: Task | None, change: str | None) -> PolicyVerdict | None:
        """The verdict on a run its wave's base push started; None for any other run (a manual,
        timer or commit run, a deeper member of a wave, a quick build)."""
        if task is None or run.trigger != Trigger.IMAGE_UPDATE or not run.wave_id:
            return None
        try:
            wave, _ = self.waves.waves.get(run.wave_id)
        except WaveNotFound:
            return None
        if pushed_content(run.cause) is None or pushed_content(run.cause) != pushed_content(wave.root):
            # Built on another task's output, not on the pushed base (the base under any of the
            # tags its push came under: a delivery of another tag joins the wave).
            return None
        # Approved: this wave was held by a policy, and a person resumed it since.
        approved = (wave.state == WaveState.ACTIVE
                    and self.decisions.seen(hold_decision_id(wave.wave_id)) is not None)
        # The run's own platform's change, not the whole base's (the most significant platform's).
        note = wave.platform_note(run.platform)
        if note is None:
            return judge(task.base_change_policy, change, approved)
        named = normalized_or_given(run.platform) if len(wave.platform_changes) > 1 else None
        return judge(task.base_change_policy, note.classification, approved, named)

    def skip(self, run: Run, task: Task, verdict: PolicyVerdict) -> None:
        """Record why the run is not built (the caller ends it Canceled with the same reason)."""
        assert verdict.action == Action.SKIP
        event_id = f"{run.run_id}:base-change"
        if self.decisions.seen(event_id) is not None:
            return  # a redelivery of the run's message after the decision was recorded
        base, _, digest = (run.cause or "").rpartition("@")
        reason = f"run {run.run_id} of {task.name} {verdict.reason}"
        self.decisions.record(Decision(event_id, EventSource.WAVE, Outcome.IDENTICAL_CONTENT, reason,
                                       image=base or None, digest=digest or None, runs=[run.run_id],
                                       tasks=[TaskDecision(task.name, Outcome.IDENTICAL_CONTENT,
                                                           verdict.reason, run.run_id)]))

    def skipped_onto(self, run: Run, task: Task) -> list[Dependency]:
        """The task's bases with the skipped change's base at its new digest (its platform's
        manifest in a multi-platform base, as a build records it): the task is on what was pushed
        (its image would be the same), so the staleness report and a later delivery of the push
        find it current, not stale nor to be built again."""
        base, _, digest = (run.cause or "").rpartition("@")
        try:
            wave, _ = self.waves.waves.get(run.wave_id or "")
        except WaveNotFound:
            wave = None
        note = wave.platform_note(run.platform) if wave is not None else None
        onto = (note.digest if note is not None else None) or digest
        return [replace(d, digest=onto) if d.image == base and onto else d for d in task.dependencies]

    def hold(self, run: Run, task: Task, verdict: PolicyVerdict, change: str) -> Run:
        """Hold the run's wave for approval, and the run with it (see the module docstring)."""
        assert verdict.action == Action.HOLD and run.wave_id
        wave_id = run.wave_id
        why = (f"{verdict.reason} of task {task.name}: {change}; `basetrigger wave resume {wave_id}` "
               f"approves, `wave cancel {wave_id}` refuses")
        wave = self._hold_wave(wave_id, why)
        if self.decisions.seen(hold_decision_id(wave_id)) is None:
            base, _, digest = wave.root.rpartition("@")
            self.decisions.record(Decision(hold_decision_id(wave_id), EventSource.WAVE, Outcome.HELD,
                                           f"wave {wave_id} held: {why}", image=base or None,
                                           digest=digest or None, runs=[run.run_id],
                                           tasks=[TaskDecision(task.name, Outcome.HELD, verdict.reason,
                                                               run.run_id)]))

        def back_to_held(current: Run) -> Run | None:
            if current.status != RunStatus.RUNNING or current.attempt != run.attempt:
                return None  # canceled meanwhile, or another worker's attempt: theirs stands
            return replace(current, status=RunStatus.HELD, released=False, heartbeat_at=None,
                           unsent_since=None, started_at=None, reason=f"wave {wave_id} held: {why}")

        held = transition(self.runs, run.run_id, back_to_held)
        if held.status == RunStatus.HELD:
            self._unrelease_member(wave_id, held)
            # Its places: a held run is not running (the caps count what really runs).
            self.waves.life.give_back(wave_id, run.run_id)
        log.warning("wave %s held by the base change policy of %s: %s", wave_id, task.name, change)
        return held

    def _hold_wave(self, wave_id: str, why: str) -> Wave:
        for _ in range(SAVE_ROUNDS):
            wave, etag = self.waves.waves.get(wave_id)
            if wave.state != WaveState.ACTIVE:
                return wave  # held already (by the breaker, or another task's policy), or over
            try:
                self.waves.waves.save(replace(wave, state=WaveState.HELD, reason=why), etag)
            except WaveConflict:
                continue
            return self.waves.waves.get(wave_id)[0]
        raise WaveConflict(f"wave {wave_id} kept changing")

    def _unrelease_member(self, wave_id: str, run: Run) -> None:
        """The member waits to be released again (`wave resume` marks it ready and releases it)."""
        assert run.task

        def unrelease(member: Member) -> Member | None:
            if not member.released or member.outcome is not None:
                return None
            return replace(member, released=False)

        # Through the coordinator: the write that moves the member moves the wave's counts too.
        self.waves.update_member(wave_id, run.task, unrelease)
