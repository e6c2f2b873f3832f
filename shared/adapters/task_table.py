"""Tasks in Table Storage: PartitionKey `task`, RowKey = task name (a task list is one partition read).

Secret build args and the git token are stored only sealed (shared.adapters.secret_box).
A task's version (Task.etag) is the entity's etag: conditional writes hand it to the storage
with MatchConditions.IfNotModified, so the storage itself refuses a write over a newer version.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, TableTransactionError, UpdateMode

from shared.adapters.secret_box import SecretBox, SecretsUnavailable
from shared.adapters.storage import Storage
from shared.domain.credentials import RegistryCredential
from shared.domain.key_rotation import ResealReport
from shared.domain.task_links import TaskLinks
from shared.domain.tasks import (
    SCHEMA_VERSION,
    Dependency,
    GraphChanged,
    Task,
    TaskChanged,
    TaskExists,
    TaskNotFound,
)
from shared.domain.timers import TaskTimer
from shared.domain.vocabulary import BaseChangePolicy, TriggerType, UpdatePolicy, utc_now

PARTITION = "task"
# The version of the task graph: a row of the tasks' own partition (so a task and it are written in
# one transaction), under a key no task name can have. Every write checked for cycles moves it on.
GRAPH_ROW = "~graph"
ONLY_TASKS = "PartitionKey eq @pk and RowKey ne @graph"
# A task changed between reading and re-sealing its secrets is read again, this many times at most.
RESEAL_ATTEMPTS = 5


def _dependencies_json(deps: list[Dependency]) -> str:
    return json.dumps([d.to_dict() for d in deps])


def to_entity(task: Task, box: SecretBox) -> dict[str, Any]:
    return {
        "PartitionKey": PARTITION,
        "RowKey": task.name,
        "SchemaVersion": SCHEMA_VERSION,
        "Images": json.dumps(task.images),
        "Context": task.context,
        "ContextUpload": task.context_upload or "",
        "Branch": task.branch or "",
        "Dockerfile": task.dockerfile,
        "BuildArgs": json.dumps(task.build_args),
        "SealedSecrets": box.seal(
            {**{f"arg:{k}": v for k, v in task.secret_args.items()},
             **({"git_token": task.git_token} if task.git_token else {}),
             **{f"cred:{c.login_server}": c.password for c in task.credentials if c.password},
             **({"notify_secret": task.update_trigger_secret} if task.update_trigger_secret else {})}
        ),
        "TriggerEnabled": task.trigger_enabled,
        "TriggerType": str(task.trigger_type),
        "Platform": task.platform,
        "UpdatePolicy": str(task.update_policy),
        "RebaseCheck": task.rebase_check or "",
        "BaseChangePolicy": str(task.base_change_policy),
        # Login servers and usernames; each password is sealed above under `cred:<login server>`.
        "Credentials": json.dumps([c.stored_dict() for c in task.credentials]),
        "Dependencies": _dependencies_json(task.dependencies),
        "Warnings": json.dumps(task.warnings),
        # Added after schema 1 (rows without them read as no timers and no source triggers).
        "Timers": json.dumps([t.stored_dict() for t in task.timers]),
        "SourceTriggers": json.dumps({"commit": task.commit_trigger_enabled,
                                      "pull_request": task.pull_request_trigger_enabled}),
        "UpdateTriggerEndpoint": task.update_trigger_endpoint or "",
        "CreatedAt": task.created_at.isoformat(),
        "UpdatedAt": task.updated_at.isoformat(),
    }


def from_entity(entity: Any, box: SecretBox) -> Task:
    secrets = box.open(entity.get("SealedSecrets"))
    return Task(
        name=entity["RowKey"],
        images=json.loads(entity["Images"]),
        context=entity["Context"],
        context_upload=entity.get("ContextUpload") or None,
        dockerfile=entity.get("Dockerfile") or "Dockerfile",
        branch=entity.get("Branch") or None,
        build_args=json.loads(entity.get("BuildArgs") or "{}"),
        secret_args={k[4:]: v for k, v in secrets.items() if k.startswith("arg:")},
        git_token=secrets.get("git_token"),
        credentials=[RegistryCredential(c["login_server"], c.get("username"),
                                        secrets.get(f"cred:{c['login_server']}"), bool(c.get("use_identity")))
                     for c in json.loads(entity.get("Credentials") or "[]")],
        trigger_enabled=bool(entity.get("TriggerEnabled")),
        trigger_type=TriggerType(entity.get("TriggerType") or TriggerType.RUNTIME),
        platform=entity.get("Platform") or "linux",
        # Tasks stored before the policy existed rebuild, as they always did.
        update_policy=UpdatePolicy(entity.get("UpdatePolicy") or UpdatePolicy.REBUILD),
        rebase_check=entity.get("RebaseCheck") or None,
        # Tasks stored before the policy existed rebuild on any change, as they always did.
        base_change_policy=BaseChangePolicy(entity.get("BaseChangePolicy") or BaseChangePolicy.ANY),
        dependencies=[Dependency(**d) for d in json.loads(entity.get("Dependencies") or "[]")],
        warnings=json.loads(entity.get("Warnings") or "[]"),
        timers=[TaskTimer.from_stored(t) for t in json.loads(entity.get("Timers") or "[]")],
        commit_trigger_enabled=bool(_source_triggers(entity).get("commit")),
        pull_request_trigger_enabled=bool(_source_triggers(entity).get("pull_request")),
        update_trigger_endpoint=entity.get("UpdateTriggerEndpoint") or None,
        update_trigger_secret=secrets.get("notify_secret"),
        created_at=datetime.fromisoformat(entity["CreatedAt"]),
        updated_at=datetime.fromisoformat(entity["UpdatedAt"]),
        etag=entity.metadata["etag"],
    )


def _source_triggers(entity: Any) -> dict[str, Any]:
    value = json.loads(entity.get("SourceTriggers") or "{}")
    return value if isinstance(value, dict) else {}


def _if_unchanged(etag: str | None) -> MatchConditions | None:
    """With an etag, the write holds only where it is still the stored one; without, the SDK sends
    `If-Match: *` (the entity must exist)."""
    return MatchConditions.IfNotModified if etag else None


class TableTaskRepository:
    def __init__(self, storage: Storage, box: SecretBox):
        self.storage = storage
        self.box = box

    @property
    def table(self) -> TableClient:
        return self.storage.table("tasks")

    def get(self, name: str) -> Task:
        try:
            return from_entity(self.table.get_entity(PARTITION, name), self.box)
        except ResourceNotFoundError as exc:
            raise TaskNotFound(f"task {name!r} not found") from exc

    def graph(self) -> tuple[list[Task], str]:
        """Every task and the graph version's etag, from one read of the partition."""
        for _ in range(2):
            tasks, version = [], None
            for entity in self.table.query_entities("PartitionKey eq @pk", parameters={"pk": PARTITION}):
                if entity["RowKey"] == GRAPH_ROW:
                    version = entity.metadata["etag"]
                else:
                    tasks.append(from_entity(entity, self.box))
            if version is not None:
                return tasks, version
            try:  # the first graph read ever: the version row is made once
                self.table.create_entity(self._graph_row())
            except ResourceExistsError:
                pass
        raise GraphChanged("the task graph's version row cannot be read")

    def _graph_row(self) -> dict[str, Any]:
        return {"PartitionKey": PARTITION, "RowKey": GRAPH_ROW, "ChangedAt": utc_now().isoformat()}

    def create(self, task: Task, graph_version: str | None = None) -> str:
        if graph_version is not None:
            return self._write_in_graph(("create", to_entity(task, self.box)), graph_version, task.name)
        try:
            written = self.table.create_entity(to_entity(task, self.box))
        except ResourceExistsError as exc:
            raise TaskExists(f"task {task.name!r} already exists") from exc
        return str(written["etag"])

    def save(self, task: Task, etag: str | None = None, graph_version: str | None = None) -> str:
        # An update, never an upsert: without an etag it still sends `If-Match: *`, so a task
        # deleted since it was read answers 404 instead of coming back.
        entity = to_entity(task, self.box)
        condition: dict[str, Any] = {"mode": UpdateMode.REPLACE, "etag": etag,
                                     "match_condition": _if_unchanged(etag)}
        if graph_version is not None:
            return self._write_in_graph(("update", entity, condition), graph_version, task.name)
        try:
            written = self.table.update_entity(entity, **condition)
        except ResourceNotFoundError as exc:
            raise TaskNotFound(f"task {task.name!r} not found") from exc
        except ResourceModifiedError as exc:
            raise self._changed(task.name) from exc
        return str(written["etag"])

    def _write_in_graph(self, operation: tuple[Any, ...], graph_version: str, name: str) -> str:
        """The task's write and the graph version's etag-guarded update, as one transaction; the
        task's new etag."""
        moved = ("update", self._graph_row(), {"mode": UpdateMode.REPLACE, "etag": graph_version,
                                                "match_condition": MatchConditions.IfNotModified})
        try:
            written = self.table.submit_transaction([moved, operation])
        except TableTransactionError as exc:
            code = str(getattr(exc, "error_code", "") or "")
            if code == "EntityAlreadyExists":
                raise TaskExists(f"task {name!r} already exists") from exc
            if exc.index == 1 and (code == "ResourceNotFound" or exc.status_code == 404):
                raise TaskNotFound(f"task {name!r} not found") from exc
            if code in ("UpdateConditionNotSatisfied", "ConditionNotMet") or exc.status_code == 412:
                if exc.index == 1:  # the task's own version, not the graph's
                    raise self._changed(name) from exc
                raise GraphChanged("the task graph changed since it was read") from exc
            raise
        return str(written[1]["etag"])

    def set_dependencies(self, name: str, deps: list[Dependency]) -> None:
        try:
            self.table.update_entity(
                {"PartitionKey": PARTITION, "RowKey": name, "Dependencies": _dependencies_json(deps)},
                mode=UpdateMode.MERGE,
            )
        except ResourceNotFoundError as exc:
            raise TaskNotFound(f"task {name!r} not found") from exc

    def delete(self, name: str, etag: str | None = None) -> None:
        try:  # a 404 is no error (the SDK's delete_entity)
            self.table.delete_entity(PARTITION, name, etag=etag, match_condition=_if_unchanged(etag))
        except ResourceModifiedError as exc:
            raise self._changed(name) from exc

    def _changed(self, name: str) -> Exception:
        """The error for a conditional write the storage refused: TaskChanged with the version
        stored now, or TaskNotFound when the task has gone meanwhile."""
        try:
            current = self.table.get_entity(PARTITION, name, select=["RowKey"])
        except ResourceNotFoundError:
            return TaskNotFound(f"task {name!r} not found")
        return TaskChanged(f"task {name!r} changed since it was read", current.metadata["etag"])

    def all(self) -> list[Task]:
        entities = self.table.query_entities(ONLY_TASKS, parameters={"pk": PARTITION, "graph": GRAPH_ROW})
        return [from_entity(e, self.box) for e in entities]

    def links(self) -> list[TaskLinks]:
        # Only the properties the graph needs: nothing to unseal, a fraction of the bytes.
        entities = self.table.query_entities(
            ONLY_TASKS, parameters={"pk": PARTITION, "graph": GRAPH_ROW},
            select=["RowKey", "Images", "TriggerEnabled", "TriggerType", "Dependencies"])
        return [TaskLinks(name=e["RowKey"], images=json.loads(e["Images"]),
                          trigger_enabled=bool(e.get("TriggerEnabled")),
                          trigger_type=TriggerType(e.get("TriggerType") or TriggerType.RUNTIME),
                          dependencies=[Dependency(**d) for d in json.loads(e.get("Dependencies") or "[]")])
                for e in entities]

    def reseal_secrets(self) -> ResealReport:
        """Re-encrypt every task's sealed secrets with the first configured key (a key rotation).

        Only the SealedSecrets property is written, with the etag read, so a task changed meanwhile
        is read again rather than overwritten. Secrets no configured key opens are left as they are
        and reported: dropping the key that sealed them would lose them.
        """
        report = ResealReport(primary_key=self.box.primary_fingerprint, keys=len(self.box.keys))
        rows = self.table.query_entities(ONLY_TASKS, parameters={"pk": PARTITION, "graph": GRAPH_ROW},
                                         select=["RowKey", "SealedSecrets"])
        for entity in rows:
            self._reseal_one(entity, report)
        return report

    def _reseal_one(self, entity: Any, report: ResealReport) -> None:
        name = entity["RowKey"]
        for _ in range(RESEAL_ATTEMPTS):
            sealed = entity.get("SealedSecrets")
            if not sealed:
                return
            if self.box.is_current(sealed):
                report.current.append(name)
                return
            try:
                resealed = self.box.reseal(sealed)
            except SecretsUnavailable:
                report.unreadable.append(name)
                return
            try:
                self.table.update_entity(
                    {"PartitionKey": PARTITION, "RowKey": name, "SealedSecrets": resealed},
                    mode=UpdateMode.MERGE, etag=entity.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
            except ResourceNotFoundError:
                return  # deleted meanwhile
            except ResourceModifiedError:
                try:
                    entity = self.table.get_entity(PARTITION, name, select=["RowKey", "SealedSecrets"])
                except ResourceNotFoundError:
                    return
                continue
            report.resealed.append(name)
            return
        report.busy.append(name)

