"""Polling git repositories that send no webhooks (BASETRIGGER_GIT_POLL): which hosts are polled,
what `git ls-remote` says a branch points at, and the event a moved head becomes.

A polled head that moved is the same source event a push webhook makes (trigger `Commit`), under
an id derived from the repository, branch and commit (`gitpoll:<repository>@<branch>:<commit>`),
so every instance and every restart that sees the same move decides it once in the decision log.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from shared.domain.source_events import SourceEvent
from shared.domain.vocabulary import EventSource, Trigger

_HOST = re.compile(r"(\*\.)?[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:\d{1,5})?")
_SHA = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")


class GitPollError(ValueError):
    """BASETRIGGER_GIT_POLL cannot be read."""


class GitRemoteError(RuntimeError):
    """The repository could not be asked, or has no such branch; str() holds no credential."""


def parse_hosts(text: str | None) -> tuple[str, ...]:
    """`git.example.com,*.corp.example,127.0.0.1:3000` or `*` (every host) -> the patterns."""
    hosts = []
    for item in (part.strip().lower() for part in (text or "").split(",")):
        if not item:
            continue
        if item != "*" and not _HOST.fullmatch(item):
            raise GitPollError(f"BASETRIGGER_GIT_POLL: {item[:80]!r} is not a host, *.domain or *")
        hosts.append(item)
    return tuple(hosts)


def is_polled(url: str, hosts: tuple[str, ...]) -> bool:
    """Is the repository at `url` on a host BASETRIGGER_GIT_POLL names?"""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    with_port = f"{host}:{parts.port}" if parts.port else host
    for pattern in hosts:
        if pattern == "*" or pattern in (host, with_port):
            return True
        if pattern.startswith("*.") and host.endswith(pattern[1:]):
            return True
    return False


@dataclass(frozen=True)
class RemoteHead:
    branch: str
    commit: str


def parse_ls_remote(output: str, branch: str | None) -> RemoteHead:
    """The head of `branch` (or of the default branch, HEAD's target) in `git ls-remote --symref`
    output."""
    refs, default = {}, None
    for line in output.splitlines():
        value, _, ref = line.partition("\t")
        if value.startswith("ref: ") and ref == "HEAD":
            default = value[len("ref: "):].removeprefix("refs/heads/")
        elif _SHA.fullmatch(value):
            refs[ref] = value
    name = branch or default
    if not name:
        raise GitRemoteError("the repository names no default branch (HEAD)")
    commit = refs.get(f"refs/heads/{name}") or (refs.get("HEAD") if not branch else None)
    if commit is None:
        raise GitRemoteError(f"the repository has no branch {name!r}")
    return RemoteHead(name, commit)


def poll_event(repository: str, head: RemoteHead, default_branch: str | None) -> SourceEvent:
    """The push a moved head stands for (`repository` as shared.domain.source_events.repository_key)."""
    event_id = f"gitpoll:{repository}@{head.branch}:{head.commit}"
    return SourceEvent(event_id=event_id, source=EventSource.GIT_POLL,
                       trigger=Trigger.COMMIT, repositories=frozenset({repository}), branch=head.branch,
                       commit=head.commit, default_branch=default_branch)
