"""A row of the dependency index: one task built FROM one base, and what dispatch needs to decide.

- trigger_enabled, trigger_type, runtime   is this base a trigger for this task at all?
- built_digest        the base digest the task last built on (or saw when it was created)
- triggered_digest    the base digest a run was last queued for (redelivery is harmless)
- pending_run_id      a queued, not yet started run (later pushes coalesce into it)
- images              the task's image templates, to name a new run's outputs

A big push writes its claims (pending run, triggered digest) after it answers: `DeferredClaim`,
held in its wave's backlog meanwhile and shown on the rows every dispatch reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from shared.domain.platforms import DEFAULT_OS
from shared.domain.rebuild_graph import TriggerVerdict, trigger_verdict
from shared.domain.vocabulary import TriggerType

SCHEMA_VERSION = 1


@dataclass
class DependencyRow:
    base: str
    task: str
    runtime: bool
    trigger_enabled: bool
    trigger_type: TriggerType
    images: list[str] = field(default_factory=list)
    built_digest: str | None = None
    triggered_digest: str | None = None
    pending_run_id: str | None = None
    # The task's platform: which manifest of a multi-platform base `built_digest` names.
    platform: str | None = None
    # The stored version this row was read at (optimistic concurrency); None for a new row.
    etag: str | None = None
    # The deferred claim (a big push's, not written yet) whose pending run and digest this row
    # shows; None for a row as stored.
    shown: DeferredClaim | None = field(default=None, compare=False, repr=False)

    @property
    def run_platform(self) -> str:
        """The platform a run of the task builds (Run.platform): the task's, `linux` by default."""
        return self.platform or DEFAULT_OS

    def verdict(self) -> TriggerVerdict:
        """Does a change of this base rebuild the task? (shared.domain.rebuild_graph decides.)"""
        return trigger_verdict(self.trigger_enabled, self.trigger_type, self.runtime)


@dataclass(frozen=True)
class DeferredClaim:
    """A big push's claim on one index row, not written yet: its wave's backlog holds it until it
    is written after the push answered (shared.service_layer.run_life). Until then every dispatch
    of the base shows it on the row as read (`shown_on`), so it decides as if it were written.

    `was_run_id` and `was_digest` are the row's dispatch state the push decided on. The claim
    stands over a row that still has that state, or that state with its pending run cleared (a
    worker clearing the run it started: it names no run of ours); any other state means a later
    dispatch moved the row on (coalesced into our run, or claimed a run of its own), or the claim
    is written already, and then the row is left as it is."""

    base: str
    task: str
    run_id: str
    digest: str
    was_run_id: str | None = None
    was_digest: str | None = None

    def stands_over(self, row: DependencyRow) -> bool:
        return (row.base == self.base and row.task == self.task
                and row.triggered_digest == self.was_digest
                and row.pending_run_id in (self.was_run_id, None))

    def shown_on(self, row: DependencyRow) -> DependencyRow:
        """The row as it will be once this claim is written (same stored version: a write
        guarded by it still fails if the row changed since it was read)."""
        return replace(row, pending_run_id=self.run_id, triggered_digest=self.digest, shown=self)


def with_deferred_claims(rows: list[DependencyRow], claims: list[DeferredClaim]) -> list[DependencyRow]:
    """The rows as dispatch must see them: each with the deferred claim that still stands over it
    (one at most: a dispatch that decided on a row shown with a claim writes its own at once)."""
    if not claims:
        return rows
    by_row = {(claim.base, claim.task): claim for claim in claims}
    shown: list[DependencyRow] = []
    for row in rows:
        claim = by_row.get((row.base, row.task))
        shown.append(claim.shown_on(row) if claim is not None and claim.stands_over(row) else row)
    return shown
