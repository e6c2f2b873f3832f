"""A task's registry credentials: `task credential add|list|update|remove` (like `az acr task credential`).

A change goes through TaskService.update, so the task's bases are read again with the new
credentials: a base of a private registry gets its digest as soon as the task can sign in there.
"""

from __future__ import annotations

from typing import Any

from shared.domain.credentials import CredentialError, RegistryCredential, normalize_login_server
from shared.domain.tasks import Task
from shared.service_layer.tasks import TaskService


class CredentialExists(CredentialError):
    pass


class CredentialNotFound(LookupError):
    pass


class TaskCredentials:
    def __init__(self, tasks: TaskService):
        self.tasks = tasks

    def list(self, name: str) -> list[RegistryCredential]:
        return list(self.tasks.get(name).credentials)

    def add(self, name: str, credential: RegistryCredential) -> Task:
        task = self.tasks.get(name)
        if any(c.login_server == credential.login_server for c in task.credentials):
            raise CredentialExists(f"task {name!r} has a credential for {credential.login_server} already: "
                                   "use `task credential update`")
        return self.tasks.update(name, credentials=[*task.credentials, credential])

    def update(self, name: str, login_server: Any, username: Any = None, password: Any = None,
               use_identity: Any = None) -> Task:
        server = normalize_login_server(login_server)
        if use_identity is not None and not isinstance(use_identity, bool):
            raise CredentialError("use_identity must be true or false")
        task = self.tasks.get(name)
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
        return self.tasks.update(name, credentials=[changed if c.login_server == server else c
                                                    for c in task.credentials])

    def remove(self, name: str, login_server: Any) -> Task:
        server = normalize_login_server(login_server)
        task = self.tasks.get(name)
        if not any(c.login_server == server for c in task.credentials):
            raise CredentialNotFound(f"task {name!r} has no credential for {server}")
        return self.tasks.update(name, credentials=[c for c in task.credentials if c.login_server != server])
