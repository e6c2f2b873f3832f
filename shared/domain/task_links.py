"""What the dependency graph needs of a task, and nothing else: its name, output image templates,
base-image trigger and bases. The task list holds exactly what the dependency index is written from
(service_layer.dependencies), so the whole graph is one read of it, without secrets or contexts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.domain.tasks import Dependency, Task
from shared.domain.vocabulary import TriggerType


@dataclass
class TaskLinks:
    name: str
    images: list[str]
    trigger_enabled: bool = True
    trigger_type: TriggerType = TriggerType.RUNTIME
    dependencies: list[Dependency] = field(default_factory=list)

    @classmethod
    def of(cls, task: Task) -> TaskLinks:
        return cls(task.name, list(task.images), task.trigger_enabled, task.trigger_type,
                   [Dependency(d.image, d.digest, d.runtime) for d in task.dependencies])
