"""A git host's push or pull request, in one shape: which repository, which branch, which commit (the
source triggers: `--commit-trigger-enabled`, `--pull-request-trigger-enabled`). The hosts' payloads
are read in shared/adapters/ingress/git_sources.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from shared.domain.vocabulary import EventSource, Trigger


@dataclass(frozen=True)
class SourceEvent:
    event_id: str
    source: EventSource
    trigger: Trigger  # Commit or Pull Request
    repositories: frozenset[str]  # the repository's URLs, normalised (repository_key)
    branch: str  # the pushed branch, or the branch a pull request targets
    commit: str  # the commit to build (a pull request's head)
    default_branch: str | None = None  # what a task without --branch builds


def repository_key(url: str) -> str:
    """A repository URL as tasks and webhooks are matched on: host and path, lower case, without
    scheme, credentials, port of the scheme, trailing `/` or `.git` (`git@host:a/b.git` too)."""
    text = url.strip()
    scp = re.fullmatch(r"[\w.-]+@([\w.-]+):(.+)", text)  # git@github.com:owner/repo.git
    if scp:
        host, path = scp.group(1), scp.group(2)
    else:
        parts = urlsplit(text)
        host, path = (parts.hostname or "") + (f":{parts.port}" if parts.port else ""), parts.path
    path = path.strip("/")
    path = path.removesuffix(".git")
    # Azure Repos: https://org@dev.azure.com/org/project/_git/repo names the same as without the user.
    return f"{host.lower()}/{path.lower()}"
