"""Rollback (`base quarantine IMAGE@DIGEST --reason … --rollback`): the tags that waves started by
the quarantined digest pushed are moved back to the images they pointed at before, each move
recorded as a run with trigger `Rollback` whose "build" is a registry tag move.

What is rolled back: every member of every wave whose root is a push of the digest (read newest
first, back `WINDOW`), cascades included, whose run succeeded. For each tag that run pushed, the
earlier image is the output of the newest successful run before it that pushed that tag, and was
not built in one of those waves: its manifest is read by digest and PUT under the tag again (the
same bytes, so the tag names the very image it named before).

Per tag, what happens is decided first and recorded in one decision (source `rollback`):
- `rolled-back`: moved, by the Rollback run named (one run per bad run and earlier image);
- `not-rolled-back`, no run, when there is nothing to move back to, or moving would be wrong:
  no earlier image of the tag (a tag only that run pushed, such as `app:{{.Run.ID}}`: it is left as
  it is, and so named), the tag points elsewhere since (someone pushed after the bad run: never
  overwritten), or it points at the earlier image already (a redelivery of the same request, or a
  second --rollback: nothing is moved twice and no run id is spent).
A move the registry refuses is a Rollback run that Failed, with the registry's reason.

Before any tag moves, the task's dependencies are set back to the base digests its earlier image
was built on: the registry's notice of the moved tag then finds the dependents built on that image
already (no rebuild wave starts from a rollback), the staleness report shows the task as stale
against the base's current digest, and once the digest is released the next push rebuilds it.
A crash after a move and before its run is recorded leaves the tag moved without a run; asking
again finds it moved and says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from shared.domain.credentials import RegistryCredential
from shared.domain.decisions import Decision, TaskDecision
from shared.domain.image_ref import ImageRef
from shared.domain.manifests import RegistryError
from shared.domain.quarantine import QuarantineEntry
from shared.domain.runs import Run, RunNotFound
from shared.domain.tasks import Dependency, Task, TaskNotFound
from shared.domain.vocabulary import EventSource, Outcome, RunStatus, Trigger, utc_now
from shared.domain.waves import Wave
from shared.service_layer.ports import DecisionLog, ImageStores, Registry, RunRepository, WaveRepository
from shared.service_layer.tasks import TaskService

log = logging.getLogger(__name__)

# How far back waves are looked for: a bad digest found later than this is rolled back by hand.
WINDOW = timedelta(days=30)
WAVES_PER_PAGE = 100
# Runs of a tag read to find the one before the bad run.
HISTORY_PER_TAG = 50


@dataclass
class _Move:
    """Tags one bad run pushed that go back to one earlier run's image."""

    bad: Run
    earlier: Run
    tags: list[str] = field(default_factory=list)


@dataclass
class RollbackResult:
    runs: list[Run]
    decision: Decision

    def to_dict(self) -> dict[str, Any]:
        return {"runs": [r.to_dict() for r in self.runs], "decision": self.decision.to_dict()}


class Rollback:
    def __init__(self, waves: WaveRepository, runs: RunRepository, tasks: TaskService, registry: Registry,
                 images: ImageStores, decisions: DecisionLog):
        self.waves = waves
        self.runs = runs
        # Its dependencies and index rows are set back (TaskService.record_build, DependencyIndex).
        self.tasks = tasks
        self.registry = registry
        self.images = images
        self.decisions = decisions

    def roll_back(self, entry: QuarantineEntry) -> RollbackResult:
        bad_waves = self._waves_of(entry.digest)
        bad_wave_ids = {w.wave_id for w in bad_waves}
        details: list[TaskDecision] = []
        moves: dict[tuple[str, str], _Move] = {}
        for wave in bad_waves:
            for member in self.waves.members(wave.wave_id):
                bad = self._run(member.run_id)
                if bad is None or bad.status != RunStatus.SUCCEEDED or not bad.output_digest:
                    continue
                for tag in bad.output_images:
                    earlier, why_not = self._earlier(tag, bad, bad_wave_ids)
                    if earlier is None:
                        details.append(TaskDecision(member.task, Outcome.NOT_ROLLED_BACK, f"{tag}: {why_not}",
                                                    bad.run_id))
                        continue
                    moves.setdefault((bad.run_id, earlier.run_id), _Move(bad, earlier)).tags.append(tag)

        for move in moves.values():
            self._set_back_dependencies(move)
        done: list[Run] = []
        for move in moves.values():
            run = self._move(move, entry)
            done.append(run)
            outcome = Outcome.ROLLED_BACK if run.status == RunStatus.SUCCEEDED else Outcome.NOT_ROLLED_BACK
            for tag in move.tags:
                why = (f"{tag} back to {move.earlier.output_digest} (the image of run {move.earlier.run_id}) "
                       f"by run {run.run_id}" if outcome == Outcome.ROLLED_BACK
                       else f"{tag}: run {run.run_id} {run.status}: {run.reason}")
                details.append(TaskDecision(move.bad.task or "-", outcome, why, run.run_id))

        target = f"{entry.image}@{entry.digest}"
        moved = sum(1 for d in details if d.outcome == Outcome.ROLLED_BACK)
        decision = Decision(f"rollback:{entry.digest}:{utc_now().isoformat()}", EventSource.ROLLBACK,
                            Outcome.ROLLED_BACK if moved else Outcome.NOT_ROLLED_BACK,
                            f"rollback of {target} ({entry.reason}): {moved} tag(s) moved back in "
                            f"{len(done)} run(s), {len(details) - moved} not, from {len(bad_waves)} wave(s)",
                            # No digest: it is no push of the base (staleness reads those), the
                            # reason names it.
                            image=entry.image, runs=[r.run_id for r in done],
                            tasks=details)
        self.decisions.record(decision, mark_seen=False)
        return RollbackResult(done, decision)

    def _waves_of(self, digest: str) -> list[Wave]:
        start = utc_now() - WINDOW
        found: list[Wave] = []
        after: str | None = None
        while True:
            page, after = self.waves.newest(top=WAVES_PER_PAGE, after=after)
            found.extend(w for w in page if w.created_at >= start and w.root.endswith(f"@{digest}"))
            if after is None or not page or page[-1].created_at < start:
                return found

    def _earlier(self, tag: str, bad: Run, bad_waves: set[str]) -> tuple[Run | None, str]:
        """The run whose image `tag` pointed at before `bad` pushed it, or why there is none to move to."""
        try:
            now = self.registry.inspect(tag, self._credentials(bad.task)).digest
        except RegistryError as exc:
            return None, f"cannot read the tag: {exc}"
        history, _ = self.runs.newest(image=tag, status=RunStatus.SUCCEEDED, top=HISTORY_PER_TAG,
                                      after=bad.run_id)
        # A Rollback run counts too: the tag pointed at the image it moved back to.
        earlier = next((r for r in history if r.output_digest and r.wave_id not in bad_waves), None)
        if earlier is None:
            return None, "no earlier image under this tag: left as it is"
        if now == earlier.output_digest:
            return None, f"points at the earlier image {now} already: nothing to move"
        if now != bad.output_digest:
            return None, (f"points at {now} now, pushed after run {bad.run_id}: not overwritten "
                          "(move it by hand if it must go)")
        return earlier, ""

    def _run(self, run_id: str) -> Run | None:
        try:
            return self.runs.get(run_id)[0]
        except RunNotFound:
            return None

    def _credentials(self, task_name: str | None) -> tuple[RegistryCredential, ...]:
        if task_name is None:
            return ()
        try:
            return tuple(self.tasks.get(task_name).credentials)
        except TaskNotFound:
            return ()

    def _set_back_dependencies(self, move: _Move) -> None:
        if move.bad.task is None:
            return
        try:
            task: Task = self.tasks.get(move.bad.task)
        except TaskNotFound:
            return
        back = move.earlier.base_digests
        self.tasks.record_build(task, [Dependency(d.image, back.get(d.image, d.digest), d.runtime)
                                       for d in task.dependencies])
        # The push that started the bad wave marked its digest as handled for the task: the task
        # is back on its earlier bases now, so the next push of that digest (once released)
        # rebuilds it instead of being taken for one already handled.
        for base, digest in move.bad.base_digests.items():
            self.tasks.index.untrigger(base, task.name, digest)

    def _move(self, move: _Move, entry: QuarantineEntry) -> Run:
        """PUT the earlier image's manifest under each tag; the Rollback run that did it, recorded."""
        (run_id,) = self.runs.allocate(1)
        earlier = move.earlier
        started = utc_now()
        run = Run(run_id, RunStatus.RUNNING, Trigger.ROLLBACK, task=move.bad.task,
                  cause=f"rollback of run {move.bad.run_id}: {entry.image}@{entry.digest} quarantined "
                  f"({entry.reason})", created_at=started, started_at=started,
                  output_images=list(move.tags), output_digest=earlier.output_digest,
                  base_digests=dict(earlier.base_digests), base_layers=dict(earlier.base_layers),
                  final_base=earlier.final_base, final_stage=earlier.final_stage,
                  reason=f"back to the image of run {earlier.run_id}")
        try:
            name = ImageRef.parse(move.tags[0]).name
            store = self.images.images(move.tags[0], self._credentials(move.bad.task))
            manifest = store.manifest(f"{name}@{earlier.output_digest}")
            for tag in move.tags:
                store.put_manifest(tag, manifest.body, manifest.media_type or str(manifest.document().get(
                    "mediaType", "application/vnd.oci.image.manifest.v1+json")))
                log.warning("rollback: %s back to %s (run %s)", tag, earlier.output_digest, run_id)
        except RegistryError as exc:
            finished = utc_now()
            run = replace(run, status=RunStatus.FAILED, finished_at=finished, output_digest=None,
                          reason=f"the registry refused the tag move: {exc}")
        else:
            finished = utc_now()
            run = replace(run, status=RunStatus.SUCCEEDED, finished_at=finished, built_at=started,
                          pushed_at=finished)
        self.runs.create_many([run])
        return run
