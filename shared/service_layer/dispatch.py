"""Dispatch: from one registry event to queued runs of the tasks built FROM the pushed image.

Every event gets a decision, recorded once per event id: ignored events, events that cannot be
parsed (`reject`) and pushes alike. The rules, in order, for each task indexed under a pushed
reference:
1. its base-image trigger is off                        -> trigger-disabled
2. the base is only a build-stage base and the trigger
   type is Runtime                                      -> not-a-runtime-dependency
3. the push is the task's own output image              -> own-output (no self-trigger loop)
4. the pushed digest is the one the task last built on  -> digest-unchanged
   (in a multi-platform index: its platform's manifest)   -> platform-unchanged
5. a run was already queued for this exact digest       -> already-triggered (redelivery is safe)
6. a run is queued and has not started yet              -> coalesced (it will build on the new base)
7. otherwise                                            -> queued: a new run
Every push of one base repository (any tag, any digest, `base rebuild` too) is dispatched one at a
time: dispatch holds `registry/repository` while it decides and claims (DispatchClaims.hold_push),
and claims on index rows are etag-guarded besides, against the index's other writers (task changes,
workers), so concurrent deliveries queue one run per task.
A push with more than BACKLOG_ABOVE new runs (run_life) writes no claim before it answers: its
claims go in its wave's backlog (DeferredClaim) and are written afterwards, where they still stand.
Until then every dispatch of the base shows them on the rows it reads (`with_deferred_claims`,
from the backlog listing RunReads keeps, made once the base is held), so redeliveries, other
digests, `base rebuild` and a wave's own outputs decide exactly as with the claims written. A row
decided on while shown with a deferred claim is claimed at once, as every row of a smaller push
is, so two deferred claims never stand over one row.
One push under several tags (`1.2` and `latest`, each delivered) is one wave: its deliveries go
one at a time, and a delivery whose digest already has an active
wave (started by another tag's delivery) joins its new runs to that wave, decided `queued` with
`joins wave wN of the same digest`; a task already in that wave (built FROM both tags) is `in-wave`.
Before the rules, a dependent whose digest (the pushed one, or its platform's in an index) is
quarantined is decided `quarantined` and its row left unclaimed (shared.service_layer.quarantine).
Before all of it, a push of a base whose registry has a settle window is decided `settling until
<time>` and dispatched later, once, on the base's newest digest (shared.service_layer.settling).
Dispatch only decides: the runs it decides on are recorded, released and sent by their owner,
shared.service_layer.run_life's RunLifecycle (and its wave coordinator).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TypeVar

from shared.domain.decisions import Decision, EventBusy, TaskDecision
from shared.domain.dependencies import DeferredClaim, DependencyRow, with_deferred_claims
from shared.domain.events import Ignored, ImagePushed
from shared.domain.platforms import normalized_or_given
from shared.domain.quarantine import QuarantineEntry
from shared.domain.rebuild_graph import is_own_output
from shared.domain.runs import Run, RunNotFound
from shared.domain.vocabulary import EventSource, Outcome, RunStatus, Trigger, utc_now
from shared.domain.waves import Wave
from shared.service_layer.dependencies import DependencyIndex
from shared.service_layer.ports import DecisionLog, DispatchClaims, RunRepository
from shared.service_layer.quarantine import QuarantineList
from shared.service_layer.run_life import BACKLOG_ABOVE, RunLifecycle
from shared.service_layer.settling import SettleWindows

log = logging.getLogger(__name__)

# How far the storage's clock may be behind ours: a big push reads again the index rows written
# since its first read, from this long before it.
CLOCK_MARGIN = timedelta(seconds=60)
# Rows that lost a claim to a concurrent dispatch are re-read and decided again this many times.
CLAIM_ROUNDS = 3
# A delivery of an event that another delivery is dispatching waits this long for its decision.
BUSY_WAIT_SECONDS = 10.0
BUSY_POLL_SECONDS = 0.25

Claimed = TypeVar("Claimed")

class Pending(StrEnum):
    """The state of the run an index row says is pending."""

    NONE = "none"
    QUEUED = "queued"
    STARTED = "started"
    MISSING = "missing"  # a dispatcher died between its claim and recording the run


def _while_busy(attempt: Callable[[], Claimed]) -> Claimed:
    """Try `attempt` until it is no longer EventBusy, for BUSY_WAIT_SECONDS at most (then the
    EventBusy goes to the caller: the sender delivers again later)."""
    deadline = time.monotonic() + BUSY_WAIT_SECONDS
    while True:
        try:
            return attempt()
        except EventBusy:
            if time.monotonic() > deadline:
                raise
            time.sleep(BUSY_POLL_SECONDS)


@dataclass
class _Claiming:
    """One dispatch's claims, as they go: were its rows read while it held the base (else beside
    taking the hold), the deferred claims of earlier pushes it knows of (listed while it held the
    base; shown on the rows it reads), and the ones it defers itself (its wave's backlog)."""

    rows_under_hold: bool
    known: list[DeferredClaim]
    deferred: list[DeferredClaim] = field(default_factory=list)
    # When the rows read beside taking the hold were asked for (None: read under the hold).
    rows_read_at: datetime | None = None


class DispatchIncomplete(RuntimeError):
    """Some events could not be dispatched (storage trouble); the sender should deliver again."""


def classify(row: DependencyRow, digest: str, pushed: str, registry: str | None,
             pending_is_queued: bool, producer_task: str | None = None,
             rebuild: bool = False, platform: str | None = None) -> tuple[Outcome, str]:
    """The outcome for one dependent task, from its index row (rules 1-7 above).

    `producer_task` is the task whose run pushed this image, when the push is a run's output.
    `rebuild` (`base rebuild`) skips the digest rules 4-5: everything built FROM it rebuilds, once
    (a task with a run queued, by a concurrent rebuild for one, coalesces into it: it builds on the
    base as it is when it starts).
    `platform`: the platform whose manifest `digest` is, when the push is a multi-platform index.
    """
    verdict = row.verdict()
    if verdict.outcome is not None:
        return verdict.outcome, verdict.reason
    if row.task == producer_task or is_own_output(row.images, pushed, registry):
        return Outcome.OWN_OUTPUT, "the push is this task's own output image"
    if rebuild:
        if row.pending_run_id and pending_is_queued:
            return Outcome.COALESCED, f"run {row.pending_run_id} is queued and will build on the base"
        return Outcome.QUEUED, "a rebuild of everything built FROM the base was asked for"
    if row.built_digest == digest:
        if platform:
            return (Outcome.PLATFORM_UNCHANGED,
                    f"platform {platform} unchanged: the task last built on {digest}")
        return Outcome.DIGEST_UNCHANGED, f"the task last built on {digest}"
    if row.triggered_digest == digest:
        return (Outcome.ALREADY_TRIGGERED,
                f"run {row.pending_run_id or '(started)'} was queued for this digest")
    if row.pending_run_id and pending_is_queued:
        return Outcome.COALESCED, f"run {row.pending_run_id} is queued and will build on the new base"
    return Outcome.QUEUED, "the base digest changed"


class Dispatcher:
    def __init__(self, index: DependencyIndex, runs: RunRepository, decisions: DecisionLog,
                 claims: DispatchClaims, life: RunLifecycle, quarantine: QuarantineList | None = None,
                 settling: SettleWindows | None = None):
        # The runs' owner: records, releases and sends the runs dispatch decides on.
        self.life = life
        self.waves = life.waves
        # Settle windows per registry (None: every push is dispatched at once).
        self.settling = settling
        self.quarantine = quarantine
        self.index = index
        self.runs = runs
        self.decisions = decisions
        self.claims = claims
        # A delivery's first round: its claims and its reads (index, producer, quarantine list).
        self._readers = ThreadPoolExecutor(max_workers=5, thread_name_prefix="dispatch")

    def rebuild(self, event: ImagePushed) -> Decision:
        """`base rebuild`: a wave of everything built FROM the image, whatever digests they built on."""
        self.claims.begin(event.event_id)
        held = event.name
        token, _ = self._hold(held, None)  # as a push of that base would (it claims the same rows)
        try:
            rows = self._readers.submit(self.index.dependents, event.reference)
            deferred = self._readers.submit(self.life.reads.claims_on, event.reference)
            decision = self._dispatch(event, event.reference, rows.result(), None, rebuild=True,
                                      deferred=deferred.result(), rows_under_hold=True)
            self.decisions.record(decision)
        finally:
            self.claims.release_push(held, token)
        return decision

    def handle(self, event: ImagePushed | Ignored, settle: bool = True) -> Decision:
        """The decision on one event, taken once per event id: a redelivery gets the first one, and
        a delivery that arrives while another is being dispatched waits for its decision.
        `settle` False: dispatched now, whatever the settle window (a settled base's event)."""
        if isinstance(event, ImagePushed) and settle and self.settling is not None:
            seconds = self.settling.window(event)
            if seconds > 0:
                return self._defer(event, seconds)
        if isinstance(event, Ignored):
            previous = self._begin(event.event_id)
            if previous is not None:
                return previous
            decision = Decision(event.event_id, event.source, Outcome.IGNORED, event.reason)
            self.decisions.record(decision)
            return decision
        # The claims and the reads a decision needs are independent: one round trip, not five.
        # Only the first try of a claim goes to the pool: a delivery that waits for another's
        # decision waits in its own thread, never in a pool worker the other delivery's reads need.
        pushed = event.reference
        # Held by repository, not by tag or digest: deliveries of one push under several tags go
        # one at a time, so the second finds the first's wave and joins it (`_fold`), and so do
        # pushes of other digests, so none claims rows another is deciding on.
        push = event.name
        claim = self._readers.submit(self.claims.begin, event.event_id)
        hold: Future[str] | None = self._readers.submit(self.claims.hold_push, push)
        rows_read_at = utc_now()
        rows = self._readers.submit(self.index.dependents, pushed)
        producer = self._readers.submit(self.runs.producer_of, pushed)
        quarantined = self._readers.submit(self._quarantined)
        try:
            previous = claim.result()
        except EventBusy:
            self._let_go(push, hold)  # never wait while holding the push: its holder may wait for us
            previous = self._begin(event.event_id)
            hold = None
        except Exception:
            self._let_go(push, hold)  # storage trouble: the sender delivers again
            raise
        if previous is not None:
            self._let_go(push, hold)
            log.info("event %s already handled (%s); redelivery ignored", event.event_id, previous.outcome)
            return previous
        try:
            token, waited = self._hold(push, hold)
        except EventBusy:
            self.claims.abandon(event.event_id)
            raise
        try:
            if waited:
                # Another dispatch of this base (this push under another event id, or another
                # digest) decided meanwhile: decide on the rows as it left them (its runs are
                # pending there; nothing is allocated again).
                rows = self._readers.submit(self.index.dependents, pushed)
                producer = self._readers.submit(self.runs.producer_of, pushed)
                quarantined = self._readers.submit(self._quarantined)
            # The claims big pushes deferred: listed once the hold is taken (while the first round's
            # reads may still be on their way), so the backlog of the dispatch that held the base
            # last is in it (it put it before letting go). One listing; blobs are cached.
            deferred = self.life.reads.claims_on(pushed)
            # The runs' sent notes are written while the decision is (both before the hold ends).
            with self.life.notes_alongside():
                decision = self._dispatch(event, pushed, rows.result(), producer.result(),
                                          quarantined=quarantined.result(), deferred=deferred,
                                          rows_under_hold=waited,
                                          rows_read_at=None if waited else rows_read_at)
                self.decisions.record(decision)
        except Exception:
            self.claims.abandon(event.event_id)
            raise
        finally:
            self.claims.release_push(push, token)
        log.info("event %s %s: %s", event.event_id, decision.outcome, decision.reason)
        return decision

    def _defer(self, event: ImagePushed, seconds: int) -> Decision:
        """A push within its base's settle window: noted, decided `settling until …`, nothing queued."""
        assert self.settling is not None
        previous = self._begin(event.event_id)
        if previous is not None:
            return previous
        try:
            return self.settling.defer(event, seconds)
        except Exception:
            self.claims.abandon(event.event_id)
            raise

    def release_settled(self, now: datetime | None = None) -> list[Decision]:
        """Housekeeping: dispatch each base that has been still for its settle window."""
        if self.settling is None:
            return []
        return self.settling.release_due(lambda event: self.handle(event, settle=False), now)

    def _let_go(self, push: str, hold: Future[str] | None) -> None:
        """Release a hold on the push if its first try took it."""
        if hold is None:
            return
        try:
            token = hold.result()
        except Exception:  # noqa: BLE001 - not taken (busy, or storage trouble): nothing to release
            return
        self.claims.release_push(push, token)

    def _hold(self, push: str, first_try: Future[str] | None) -> tuple[str, bool]:
        """The hold on the push (its token), and whether this delivery had to wait for it; waits
        like _begin, then EventBusy (the sender delivers again later)."""
        if first_try is not None:
            try:
                return first_try.result(), False
            except EventBusy:
                pass
        return _while_busy(lambda: self.claims.hold_push(push)), True

    def _begin(self, event_id: str) -> Decision | None:
        """Claim the event; while a concurrent delivery dispatches it, wait a little for its
        decision (then EventBusy: the sender delivers again later, and nothing is lost)."""
        return _while_busy(lambda: self.claims.begin(event_id))

    def reject(self, event_id: str, source: EventSource, reason: str) -> Decision:
        """A payload that cannot be parsed: recorded, so the sender's mistake is visible."""
        decision = Decision(event_id, source, Outcome.REJECTED, reason)
        self.decisions.record(decision, mark_seen=False)
        return decision

    def _pending(self, run_id: str | None) -> tuple[Pending, Run | None]:
        if not run_id:
            return Pending.NONE, None
        try:
            run, _ = self.life.reads.get(run_id)  # a run in its wave's backlog is pending too
        except RunNotFound:
            return Pending.MISSING, None
        return (Pending.QUEUED if run.status == RunStatus.QUEUED else Pending.STARTED), run

    def _dispatch(self, event: ImagePushed, pushed: str, rows: list[DependencyRow],
                  producer: Run | None, rebuild: bool = False,
                  quarantined: dict[str, QuarantineEntry] | None = None,
                  deferred: list[DeferredClaim] | None = None, rows_under_hold: bool = True,
                  rows_read_at: datetime | None = None) -> Decision:
        """`quarantined`: the quarantine list, read beside the rows (None: read here). `deferred`:
        the claims big pushes deferred, listed while this dispatch holds the base (None: listed
        here). `rows_under_hold`: were the rows read after this dispatch took its hold (else
        beside taking it, asked for at `rows_read_at`)."""
        claiming = _Claiming(rows_under_hold,
                             self.life.reads.claims_on(pushed) if deferred is None else deferred,
                             rows_read_at=rows_read_at)
        rows = with_deferred_claims(rows, claiming.known)
        # Is this push a run's own output (a build pushing its result)? Then it is recorded as
        # such, and it never triggers the task that produced it (no trigger loops).
        if producer and producer.output_digest not in (None, event.digest):
            producer = None  # someone pushed the tag again after that run
        if not rows:
            if producer:
                return Decision(event.event_id, event.source, Outcome.OWN_OUTPUT,
                                f"the output of run {producer.run_id}; no task is built FROM {pushed}",
                                image=pushed, digest=event.digest, runs=[producer.run_id])
            return Decision(event.event_id, event.source, Outcome.NO_DEPENDENTS,
                            f"no task is built FROM {pushed}", image=pushed, digest=event.digest)
        if producer and producer.wave_id and producer.task and self.waves.recorded(producer.wave_id):
            return self._in_wave(event, pushed, rows, producer)
        producer_task = producer.task if producer else None
        rows, details = self._outside_quarantine(
            event, rows, self._quarantined() if quarantined is None else quarantined)
        if not rows:
            return Decision(event.event_id, event.source, Outcome.QUARANTINED, details[0].reason,
                            image=pushed, digest=event.digest, tasks=details)

        # The active wave of this very push under another tag (`1.2` then `latest`), looked up once,
        # when a task is to be queued: its runs join it rather than start a wave of their own.
        folding: list[Wave | None] = []

        def same_push_wave() -> Wave | None:
            if not folding:
                folding.append(None if rebuild else self.waves.wave_of(event.content))
            return folding[0]

        runs: list[Run] = []
        won: list[DependencyRow] = []
        recovered: list[Run] = []
        unsent: list[str] = []
        spare: list[str] = []  # ids allocated for claims that were lost: the next round uses them
        todo = rows
        for _round in range(CLAIM_ROUNDS):
            fresh: list[DependencyRow] = []
            for row in todo:
                pending, pending_run = self._pending(row.pending_run_id)
                # A task building one platform FROM a multi-platform base compares that platform's
                # manifest digest, not the index's (ImagePushed.digest_for).
                digest = event.digest_for(row.platform)
                platform = normalized_or_given(row.platform) if digest != event.digest else None
                outcome, reason = classify(row, digest, pushed, self.life.registry_host,
                                           pending == Pending.QUEUED, producer_task, rebuild, platform)
                if outcome == Outcome.QUEUED:
                    wave = same_push_wave()
                    member = self.waves.member(wave.wave_id, row.task) if wave else None
                    if wave is None or member is None or not self.index.coalesce(row, digest):
                        fresh.append(row)
                        continue
                    # Built FROM both tags (or deeper in that wave): it builds once, there.
                    details.append(TaskDecision(row.task, Outcome.IN_WAVE,
                                                f"builds once in wave {wave.wave_id} of the same digest "
                                                f"({wave.root}) as run {member.run_id}", member.run_id))
                    continue
                # A run released whose message was never sent (the dispatch that recorded it failed
                # on the send) gets it now: deliveries of one push hold it one at a time, and a sent
                # message is noted on its run (Run.unsent_since), so none is sent twice.
                if (outcome == Outcome.ALREADY_TRIGGERED and pending_run is not None
                        and pending == Pending.QUEUED and self.life.left_unsent(pending_run)):
                    unsent.append(pending_run.run_id)
                    reason += "; its message, never sent, is sent now"
                if outcome == Outcome.ALREADY_TRIGGERED and row.pending_run_id and pending == Pending.MISSING:
                    # Claimed, but the run was never recorded: its dispatcher failed or died (deliveries
                    # of one push hold it one at a time, so none is still recording it). Record it
                    # now, under its id.
                    recovered.append(self._new_run(event, pushed, row, row.pending_run_id))
                    reason = f"run {row.pending_run_id} was claimed but never recorded; recorded now"
                if outcome == Outcome.COALESCED and not self.index.coalesce(row, digest):
                    fresh.append(row)  # changed under us: decide again below
                    continue
                details.append(TaskDecision(row.task, outcome, reason, row.pending_run_id))
            todo = self._claim_new_runs(event, pushed, fresh, runs, won, details, spare, claiming,
                                        may_defer=bool(fresh) and same_push_wave() is None)
            if not todo:
                break
            todo = with_deferred_claims(self.index.reread(todo), claiming.known)
        for row in todo:
            details.append(TaskDecision(row.task, Outcome.ALREADY_TRIGGERED,
                                        "concurrent dispatch kept winning"))

        self.life.launch(recovered)
        self.life.send(unsent)
        wave_note = ""
        target = same_push_wave() if runs else None
        if target is not None:
            runs, wave_note = self._fold(target, runs, won, details)
        if runs and target is None:
            wave, everything = self.waves.start(f"{pushed}@{event.digest}", event.event_id,
                                                {run.task: run for run in runs if run.task}, won,
                                                pushed_at=event.time, received_at=event.received_at,
                                                claims=claiming.deferred)
            wave_note = f"; wave {wave.wave_id}: {len(everything)} run(s) in {wave.levels} level(s)"
            runs = everything
        runs = recovered + runs
        counts = Counter(t.outcome for t in details)
        if runs:
            outcome = Outcome.QUEUED
        else:
            outcome = details[0].outcome if len(counts) == 1 else Outcome.NOT_QUEUED
        summary = ", ".join(f"{n} {name}" for name, n in sorted(counts.items()))
        return Decision(event.event_id, event.source, outcome,
                        f"{len(details)} dependent task(s) of {pushed}: {summary}{wave_note}",
                        image=pushed, digest=event.digest,
                        runs=[run.run_id for run in runs], tasks=details)

    def _fold(self, wave: Wave, runs: list[Run], won: list[DependencyRow],
              details: list[TaskDecision]) -> tuple[list[Run], str]:
        """This push's new runs (claimed, not recorded) join `wave`, which a delivery of the same
        digest under another tag started: one wave per pushed digest. Their tasks' dependents
        join it when their outputs are pushed (`_in_wave`). Returns the runs that joined, and
        what the decision says of it."""
        rows = {row.task: row for row in won}
        joined: list[Run] = []
        for run in runs:
            assert run.task
            if self.waves.join(wave.wave_id, None, rows[run.task], run.cause or "", planned=run) is None:
                # Canceled meanwhile (never recorded: a later push's dispatch recovers the claimed
                # run), or a member already (its planned run is dropped): it builds no more here.
                reason = f"wave {wave.wave_id} of the same digest ({wave.root}) takes no more runs"
                outcome = Outcome.WAVE_CANCELED
            else:
                joined.append(run)
                reason = (f"base {run.cause} changed; joins wave {wave.wave_id} of the same digest "
                          f"({wave.root})")
                outcome = Outcome.QUEUED
            details[:] = [replace(d, outcome=outcome, reason=reason) if d.run_id == run.run_id else d
                          for d in details]
        return joined, (f"; joined wave {wave.wave_id} of the same digest ({wave.root}): "
                        f"{len(joined)} run(s)")

    def _quarantined(self) -> dict[str, QuarantineEntry]:
        """The quarantine list by digest (read on every event: a quarantine set a moment ago by
        another process blocks the next push)."""
        if self.quarantine is None:
            return {}
        return {e.digest: e for e in self.quarantine.entries()}

    @staticmethod
    def _outside_quarantine(event: ImagePushed, rows: list[DependencyRow],
                            entries: dict[str, QuarantineEntry]) \
            -> tuple[list[DependencyRow], list[TaskDecision]]:
        """The rows whose digest (the pushed one, or their platform's in an index) is not quarantined,
        and a `quarantined` detail for each of the others (their rows are not claimed: a release
        lets the next push through as if this one never came)."""
        if not entries:
            return rows, []
        kept: list[DependencyRow] = []
        blocked: list[TaskDecision] = []
        for row in rows:
            entry = entries.get(event.digest) or entries.get(event.digest_for(row.platform))
            if entry is None:
                kept.append(row)
            else:
                blocked.append(TaskDecision(row.task, Outcome.QUARANTINED, entry.decision))
        return kept, blocked

    def _in_wave(self, event: ImagePushed, pushed: str, rows: list[DependencyRow], producer: Run) -> Decision:
        """A push by a run of a wave: its dependents build in that wave, once; never again."""
        assert producer.wave_id and producer.task
        wave_id = producer.wave_id
        source = self.waves.waves.member(wave_id, producer.task)
        details: list[TaskDecision] = []
        runs: list[str] = []
        for row in rows:
            outcome, reason = classify(row, event.digest, pushed, self.life.registry_host, False,
                                       producer.task)
            if outcome not in (Outcome.QUEUED, Outcome.ALREADY_TRIGGERED, Outcome.COALESCED):
                details.append(TaskDecision(row.task, outcome, reason))
                continue
            member = self.waves.member(wave_id, row.task)
            if member is None:
                # Left out of this wave while it waited in another: if it has not started yet, it
                # builds on this push there (coalesced); if it has, it joins this wave now.
                waiting = self.waves.waiting_elsewhere([row.task], but=wave_id).get(row.task)
                if waiting is not None:
                    details.append(TaskDecision(row.task, Outcome.COALESCED,
                                                f"run {waiting.run_id} waits in wave {waiting.wave_id} "
                                                "and will build on this push", waiting.run_id))
                    continue
                run = self.waves.join(wave_id, source, row, f"{pushed}@{event.digest} (wave {wave_id})")
                if run is not None:
                    runs.append(run.run_id)
                    details.append(TaskDecision(row.task, Outcome.QUEUED,
                                                f"joins wave {wave_id} as run {run.run_id}", run.run_id))
                    continue
                member = self.waves.member(wave_id, row.task)
                if member is None:  # the wave was canceled: it takes no one in
                    details.append(TaskDecision(row.task, Outcome.WAVE_CANCELED,
                                                f"wave {wave_id} was canceled; nothing more is built in it"))
                    continue
            if member is not None and member.outcome is None:
                details.append(TaskDecision(row.task, Outcome.IN_WAVE,
                                            f"builds once in wave {wave_id} (run {member.run_id}), "
                                            "when all its bases in the wave are built", member.run_id))
            else:
                ran = f" (run {member.run_id}, {member.outcome})" if member else ""
                details.append(TaskDecision(row.task, Outcome.ALREADY_RAN_IN_WAVE,
                                            f"already ran in wave {wave_id}{ran}: a cycle through "
                                            f"{producer.task}; the wave never re-enters a task",
                                            member.run_id if member else None))
        counts = Counter(t.outcome for t in details)
        outcome = Outcome.QUEUED if runs else (details[0].outcome if len(counts) == 1 else Outcome.NOT_QUEUED)
        summary = ", ".join(f"{n} {name}" for name, n in sorted(counts.items()))
        return Decision(event.event_id, event.source, outcome,
                        f"pushed by run {producer.run_id} of wave {wave_id}; {len(details)} dependent "
                        f"task(s): {summary}", image=pushed, digest=event.digest, runs=runs, tasks=details)

    def _new_run(self, event: ImagePushed, pushed: str, row: DependencyRow, run_id: str) -> Run:
        return self.life.new_run(run_id, Trigger.IMAGE_UPDATE, row.images, task=row.task,
                                 cause=f"{pushed}@{event.digest}", event_id=event.event_id,
                                 platform=row.run_platform)

    def _claim_new_runs(self, event: ImagePushed, pushed: str, rows: list[DependencyRow], runs: list[Run],
                        won_rows: list[DependencyRow], details: list[TaskDecision],
                        spare: list[str], claiming: _Claiming, may_defer: bool) -> list[DependencyRow]:
        """Allocate ids (the `spare` ones first), plan the runs, claim the rows. Returns the rows that
        lost a race; the ids planned for them go back to `spare`, so a lost claim burns no run id.

        A push with more than BACKLOG_ABOVE rows to claim as stored, starting a wave of its own,
        defers their claims (`claiming.deferred`, its wave's backlog): no row is written before
        it answers. Rows shown with an earlier push's deferred claim are claimed at once."""
        if not rows:
            return []
        # A big push whose rows were read beside taking the hold reads them again, beside the
        # counter: a smaller push that held the base just before may have claimed some after the
        # first read (a claim deferred on such a row would be written over nothing, and its task
        # would have two runs). A row changed since is decided again (read anew), as a lost claim is.
        # Only the rows written since the first read was asked for come back (less CLOCK_MARGIN,
        # for the storage's clock): a few, not the base's 10,000.
        big = len(rows) > BACKLOG_ABOVE and may_defer
        since = (claiming.rows_read_at or utc_now()) - CLOCK_MARGIN
        again = (self._readers.submit(self.index.changed_since, pushed, since)
                 if big and not claiming.rows_under_hold else None)
        reused, spare[:] = spare[: len(rows)], spare[len(rows):]
        ids = reused + self.life.allocate(len(rows) - len(reused))
        stale: set[str] = set()
        if again is not None:
            changed = {row.task: row.etag for row in again.result()}
            claiming.rows_under_hold = True
            stale = {row.task for row in rows if changed.get(row.task, row.etag) != row.etag}
        planned: dict[str, Run] = {}
        was: dict[str, tuple[str | None, str | None]] = {}
        unused = iter(ids)
        for row, run_id in zip((row for row in rows if row.task not in stale), unused, strict=False):
            try:
                planned[row.task] = self._new_run(event, pushed, row, run_id)
            except ValueError as exc:  # an image template that no longer renders: skip only this task
                details.append(TaskDecision(row.task, Outcome.REJECTED,
                                            f"the task's image is invalid: {exc}"))
                spare.append(run_id)
                continue
            was[row.task] = (row.pending_run_id, row.triggered_digest)
            row.pending_run_id = run_id
            row.triggered_digest = event.digest_for(row.platform)
        spare.extend(unused)  # the ids of stale rows
        claimed = [row for row in rows if row.task in planned]
        later = [row for row in claimed if row.shown is None] if big else []
        if len(later) > BACKLOG_ABOVE:
            claiming.deferred.extend(
                DeferredClaim(row.base, row.task, planned[row.task].run_id, row.triggered_digest or "",
                              *was[row.task]) for row in later)
            _, lost = self.index.claim([row for row in claimed if row.shown is not None])
        else:
            _, lost = self.index.claim(claimed)
        spare.extend(planned[row.task].run_id for row in lost)
        lost_tasks = {row.task for row in lost}
        for row in claimed:
            if row.task in lost_tasks:
                continue
            won_rows.append(row)
            run = planned[row.task]
            runs.append(run)
            details.append(TaskDecision(row.task, Outcome.QUEUED, f"base {run.cause} changed", run.run_id))
        return [row for row in rows if row.task in stale] + lost
