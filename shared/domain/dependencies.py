"""A row of the dependency index: one task built FROM one base, and what dispatch needs to decide.

- trigger_enabled, trigger_type, runtime   is this base a trigger for this task at all?
- built_digest        the base digest the task last built on (or saw when it was created)
- triggered_digest    the base digest a run was last queued for (redelivery is harmless)
- pending_run_id      a queued, not yet started run (later pushes coalesce into it)
- images              the task's image templates, to name a new run's outputs
"""

from __future__ import annotations

from dataclasses import dataclass, field

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

    @property
    def run_platform(self) -> str:
        """The platform a run of the task builds (Run.platform): the task's, `linux` by default."""
        return self.platform or DEFAULT_OS

    def verdict(self) -> TriggerVerdict:
        """Does a change of this base rebuild the task? (shared.domain.rebuild_graph decides.)"""
        return trigger_verdict(self.trigger_enabled, self.trigger_type, self.runtime)
