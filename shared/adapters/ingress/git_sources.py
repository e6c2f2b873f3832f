"""Git hosts' push and pull request webhooks (GitHub, GitLab, Azure Repos), read into a SourceEvent.

Each parser takes the decoded JSON and returns a SourceEvent, an Ignored for events no trigger acts
on (a deleted branch, a closed pull request, a tag), or a Rejected for a payload that lacks what a
trigger needs.
"""

from __future__ import annotations

import re
from typing import Any

from shared.domain.events import Ignored, MalformedEvent, Rejected, printable_id
from shared.domain.source_events import SourceEvent, repository_key
from shared.domain.vocabulary import EventSource, Trigger

_SHA = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")
_BRANCH_REF = "refs/heads/"
# GitHub's pull_request actions that change what the pull request would build.
PR_ACTIONS = frozenset({"opened", "synchronize", "reopened"})


def from_github(kind: str | None, delivery: str | None, data: Any) -> SourceEvent | Ignored | Rejected:
    """GitHub `push` and `pull_request` events (the repository webhook's payloads)."""
    try:
        return _github(kind, delivery, data)
    except MalformedEvent as exc:
        return Rejected(printable_id(f"github:{delivery or ''}"), str(exc), EventSource.GITHUB)


def from_gitlab(kind: str | None, data: Any) -> SourceEvent | Ignored | Rejected:
    """GitLab's `Push Hook` (X-Gitlab-Event)."""
    try:
        return _gitlab(kind, data)
    except MalformedEvent as exc:
        return Rejected("(gitlab payload)", str(exc), EventSource.GITLAB)


def from_azure_repos(data: Any) -> SourceEvent | Ignored | Rejected:
    """Azure Repos service hooks: `git.push` and `git.pullrequest.created|updated`."""
    try:
        return _azure_repos(data)
    except MalformedEvent as exc:
        return Rejected("(azure repos payload)", str(exc), EventSource.AZURE_REPOS)


def _text(data: Any, *keys: str) -> str | None:
    value = data
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value if isinstance(value, str) and value else None


def _commit(value: str | None, what: str) -> str:
    if not value or not _SHA.fullmatch(value):
        raise MalformedEvent(f"{what} is not a commit id")
    return value


def _branch(ref: str | None) -> str | None:
    return ref[len(_BRANCH_REF):] if ref and ref.startswith(_BRANCH_REF) else None


def _urls(*values: str | None) -> frozenset[str]:
    return frozenset(repository_key(v) for v in values if v)


def _github(kind: str | None, delivery: str | None, data: Any) -> SourceEvent | Ignored:
    """GitHub `push` and `pull_request` events (the repository webhook's payloads)."""
    event_id = f"github:{delivery or ''}"
    if not isinstance(data, dict):
        raise MalformedEvent("the payload is not a JSON object")
    repo = data.get("repository")
    urls = _urls(_text(repo, "clone_url"), _text(repo, "html_url"), _text(repo, "ssh_url"))
    if not urls:
        raise MalformedEvent("repository.clone_url is missing")
    default = _text(repo, "default_branch")
    if kind == "push":
        branch = _branch(_text(data, "ref"))
        if branch is None or data.get("deleted"):
            return Ignored(event_id, "a tag, or a deleted branch: nothing to build", EventSource.GITHUB)
        return SourceEvent(event_id, EventSource.GITHUB, Trigger.COMMIT, urls, branch,
                           _commit(_text(data, "after"), "after"), default)
    if kind == "pull_request":
        if data.get("action") not in PR_ACTIONS:
            return Ignored(event_id, f"pull request action {str(data.get('action'))[:40]!r} builds nothing",
                           EventSource.GITHUB)
        target = _text(data, "pull_request", "base", "ref")
        if not target:
            raise MalformedEvent("pull_request.base.ref is missing")
        return SourceEvent(event_id, EventSource.GITHUB, Trigger.PULL_REQUEST, urls, target,
                           _commit(_text(data, "pull_request", "head", "sha"), "pull_request.head.sha"),
                           default)
    return Ignored(event_id, f"GitHub event {str(kind)[:40]!r} is no source trigger", EventSource.GITHUB)


def _gitlab(kind: str | None, data: Any) -> SourceEvent | Ignored:
    """GitLab's `Push Hook` (X-Gitlab-Event). GitLab sends no delivery id in the body: a push is
    named by its project, ref and commit, so a redelivery is the same event."""
    if not isinstance(data, dict):
        raise MalformedEvent("the payload is not a JSON object")
    if kind != "Push Hook" or data.get("object_kind") != "push":
        return Ignored(f"gitlab:{str(kind)[:40]}", f"GitLab event {str(kind)[:40]!r} is no source trigger",
                       EventSource.GITLAB)
    project = data.get("project")
    urls = _urls(_text(project, "git_http_url"), _text(project, "git_ssh_url"), _text(project, "web_url"))
    if not urls:
        raise MalformedEvent("project.git_http_url is missing")
    branch, after = _branch(_text(data, "ref")), _text(data, "checkout_sha") or _text(data, "after")
    event_id = f"gitlab:{min(urls)}:{_text(data, 'ref')}:{after}"
    if branch is None or not after or set(after) == {"0"}:
        return Ignored(event_id, "a tag, or a deleted branch: nothing to build", EventSource.GITLAB)
    return SourceEvent(event_id, EventSource.GITLAB, Trigger.COMMIT, urls, branch,
                       _commit(after, "checkout_sha"), _text(project, "default_branch"))


def _azure_repos(data: Any) -> SourceEvent | Ignored:
    """Azure Repos service hooks: `git.push` and `git.pullrequest.created|updated`."""
    if not isinstance(data, dict):
        raise MalformedEvent("the payload is not a JSON object")
    event_id = f"azure-repos:{_text(data, 'id') or ''}"
    kind = _text(data, "eventType")
    resource = data.get("resource")
    repo = resource.get("repository") if isinstance(resource, dict) else None
    urls = _urls(_text(repo, "remoteUrl"), _text(repo, "webUrl"))
    default = _branch(_text(repo, "defaultBranch"))
    if kind == "git.push":
        if not urls:
            raise MalformedEvent("resource.repository.remoteUrl is missing")
        updates = resource.get("refUpdates") if isinstance(resource, dict) else None
        for update in updates if isinstance(updates, list) else []:
            branch, new = _branch(_text(update, "name")), _text(update, "newObjectId")
            if branch and new and set(new) != {"0"}:
                return SourceEvent(event_id, EventSource.AZURE_REPOS, Trigger.COMMIT, urls, branch,
                                   _commit(new, "refUpdates.newObjectId"), default)
        return Ignored(event_id, "no branch was pushed (a tag, a deletion)", EventSource.AZURE_REPOS)
    if kind in ("git.pullrequest.created", "git.pullrequest.updated"):
        if not urls:
            raise MalformedEvent("resource.repository.remoteUrl is missing")
        target = _branch(_text(resource, "targetRefName"))
        if not target:
            raise MalformedEvent("resource.targetRefName is not a branch")
        return SourceEvent(event_id, EventSource.AZURE_REPOS, Trigger.PULL_REQUEST, urls, target,
                           _commit(_text(resource, "lastMergeSourceCommit", "commitId"),
                                   "lastMergeSourceCommit.commitId"), default)
    return Ignored(event_id, f"Azure Repos event {str(kind)[:60]!r} is no source trigger",
                   EventSource.AZURE_REPOS)
