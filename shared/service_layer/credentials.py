"""A task's registry credentials: `task credential add|list|update|remove` (like `az acr task credential`).

A change goes through TaskService.update, so the task's bases are read again with the new
credentials: a base of a private registry gets its digest as soon as the task can sign in there.
Each change edits the list as read, written only if the task is still at that version: one made
meanwhile (another credential added at the same time) is read again and the edit made anew, never
overwritten.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shared.domain.credentials import CredentialError, RegistryCredential, normalize_login_server
from shared.domain.tasks import ExpectedVersion, Task, TaskChanged
from shared.service_layer.tasks import TaskService

# A task changed between reading its credentials and writing them is read again, this many times at most.
EDIT_ATTEMPTS = 5
# The task's credentials as one change makes them, from the task as read (the class's `list` shadows
# the builtin in its body, hence the alias out here).
CredentialsEdit = Callable[[Task], list[RegistryCredential]]


class CredentialExists(CredentialError):
    pass


class CredentialNotFound(LookupError):
    pass


class TaskCredentials:
    def __init__(self, tasks: TaskService):
        self.tasks = tasks

    def list(self, name: str) -> list[RegistryCredential]:
        return list(self.tasks.get(name).credentials)

    def _edit(self, name: str, edit: CredentialsEdit) -> Task:
        """Write `edit(task)` as the task's credentials, on the version it was read at; read again
        and edit anew when the task changed meanwhile (TaskChanged after EDIT_ATTEMPTS)."""
        for _ in range(EDIT_ATTEMPTS - 1):
            try:
                return self._edit_once(name, edit)
            except TaskChanged:
                continue
        return self._edit_once(name, edit)

    def _edit_once(self, name: str, edit: CredentialsEdit) -> Task:
        task = self.tasks.get(name)
        return self.tasks.update(name, expected=ExpectedVersion(frozenset({task.etag or ""})),
                                 credentials=edit(task))

    def add(self, name: str, credential: RegistryCredential) -> Task:
        def added(task: Task) -> list[RegistryCredential]:
            if any(c.login_server == credential.login_server for c in task.credentials):
                raise CredentialExists(f"task {name!r} has a credential for {credential.login_server} "
                                       "already: use `task credential update`")
            return [*task.credentials, credential]

        return self._edit(name, added)

    def update(self, name: str, login_server: Any, username: Any = None, password: Any = None,
               use_identity: Any = None) -> Task:
        server = normalize_login_server(login_server)
        if use_identity is not None and not isinstance(use_identity, bool):
            raise CredentialError("use_identity must be true or false")

        def updated(task: Task) -> list[RegistryCredential]:
            current = next((c for c in task.credentials if c.login_server == server), None)
            if current is None:
                raise CredentialNotFound(f"task {name!r} has no credential for {server}")
            identity = current.use_identity if use_identity is None else use_identity
            if use_identity is True or (identity and username is None and password is None):
                changed = RegistryCredential.create(server, use_identity=True)
            else:
                changed = RegistryCredential.create(
                    server, username if username is not None else current.username,
                    password if password is not None else current.password)
            return [changed if c.login_server == server else c for c in task.credentials]

        return self._edit(name, updated)

    def remove(self, name: str, login_server: Any) -> Task:
        server = normalize_login_server(login_server)

        def removed(task: Task) -> list[RegistryCredential]:
            if not any(c.login_server == server for c in task.credentials):
                raise CredentialNotFound(f"task {name!r} has no credential for {server}")
            return [c for c in task.credentials if c.login_server != server]

        return self._edit(name, removed)
