"""Registry credentials of a task (`basetrigger task credential add`, like `az acr task credential`).

A task may name, per login server, a username and password (basic credentials: the distribution
token flow trades them for a bearer token) or, for an ACR login server, the app's managed identity.
They are used wherever the task's bases are read (digests, polling) and built from (buildah's auth
file). The password is stored only sealed with the task's other secrets and never shown: answers
carry `"password": true` at most.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# Docker Hub answers under several names; images say docker.io.
DOCKER_HUB = "docker.io"
_DOCKER_HUB_ALIASES = {"index.docker.io", "registry-1.docker.io", "registry.hub.docker.com", "docker.io"}
# host[:port], a bracketed IPv6 host allowed; no scheme, path or user info.
_LOGIN_SERVER = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9-]{1,63})*"
                           r"|\[[0-9A-Fa-f:]+\])(?::[0-9]{1,5})?")
MAX_USERNAME = 256
MAX_PASSWORD = 8192
MAX_CREDENTIALS = 20
# Azure's public and sovereign clouds name ACR login servers with these suffixes.
ACR_SUFFIXES = (".azurecr.io", ".azurecr.cn", ".azurecr.us", ".azurecr.de")


class CredentialError(ValueError):
    """A credential that cannot be stored as given (the message never quotes the password)."""


def normalize_login_server(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise CredentialError("--login-server is required (a registry host, e.g. myregistry.azurecr.io)")
    text = value.strip().lower()
    for scheme in ("https://", "http://"):
        if text.startswith(scheme):
            text = text[len(scheme):]
    text = text.rstrip("/")
    if not _LOGIN_SERVER.fullmatch(text):
        raise CredentialError(f"{value!r} is not a registry host (host or host:port)")
    return DOCKER_HUB if text in _DOCKER_HUB_ALIASES else text


def is_acr(login_server: str) -> bool:
    return login_server.split(":")[0].endswith(ACR_SUFFIXES)


@dataclass(frozen=True)
class RegistryCredential:
    login_server: str
    username: str | None = None
    password: str | None = None
    use_identity: bool = False

    def __repr__(self) -> str:  # never the password
        return (f"RegistryCredential({self.login_server!r}, username={self.username!r}, "
                f"use_identity={self.use_identity})")

    @classmethod
    def create(cls, login_server: Any, username: Any = None, password: Any = None,
               use_identity: Any = False) -> RegistryCredential:
        server = normalize_login_server(login_server)
        if not isinstance(use_identity, bool):
            raise CredentialError("use_identity must be true or false")
        if use_identity:
            if username or password:
                raise CredentialError("--use-identity takes no --username or --password")
            if not is_acr(server):
                raise CredentialError(f"--use-identity signs in with the app's managed identity, which "
                                      f"only Azure Container Registry accepts; {server} is not an ACR "
                                      "login server")
            return cls(server, use_identity=True)
        if not isinstance(username, str) or not username or len(username) > MAX_USERNAME \
                or not username.isprintable():
            raise CredentialError(f"--username is required: at most {MAX_USERNAME} printable characters")
        if not isinstance(password, str) or not password or len(password) > MAX_PASSWORD:
            raise CredentialError("--password is required")
        return cls(server, username=username, password=password)

    def public_dict(self) -> dict[str, Any]:
        """What answers show: never the password, only whether there is one."""
        return {"login_server": self.login_server, "username": self.username,
                "password": bool(self.password), "use_identity": self.use_identity}

    def stored_dict(self) -> dict[str, Any]:
        """The unsealed part of the stored form (the password is sealed apart)."""
        return {"login_server": self.login_server, "username": self.username,
                "use_identity": self.use_identity}


def for_registry(credentials: Iterable[RegistryCredential], registry: str) -> RegistryCredential | None:
    """The credential a task has for `registry` (a reference's host), if any."""
    try:
        wanted = normalize_login_server(registry)
    except CredentialError:
        return None
    return next((c for c in credentials if c.login_server == wanted), None)


def check_unique(credentials: list[RegistryCredential]) -> None:
    servers = [c.login_server for c in credentials]
    if len(set(servers)) != len(servers):
        raise CredentialError("a task has at most one credential per login server")
    if len(servers) > MAX_CREDENTIALS:
        raise CredentialError(f"a task has at most {MAX_CREDENTIALS} registry credentials")
