"""Git hosts' push / pull request payloads read into one shape, and matched to tasks on fakes."""

from __future__ import annotations

from shared.adapters.ingress.git_sources import from_azure_repos, from_github, from_gitlab
from shared.domain.events import Ignored
from shared.domain.source_events import repository_key
from shared.domain.tasks import Task
from shared.domain.vocabulary import Trigger
from shared.service_layer.source_triggers import SourceTriggers
from tests.fakes import FakeApp
from tests.rejections import rejection

SHA = "a" * 40


def test_repository_urls_match_whatever_form_the_host_sends():
    keys = {repository_key(u) for u in ("https://github.com/Octo/App.git", "https://github.com/octo/app/",
                                        "git@github.com:octo/app.git", "https://user@github.com/octo/app")}
    assert keys == {"github.com/octo/app"}


def test_github_gitlab_and_azure_repos_payloads():
    push = from_github("push", "d1", {"ref": "refs/heads/main", "after": SHA,
                                      "repository": {"clone_url": "https://github.com/o/a.git"}})
    assert not isinstance(push, Ignored) and (push.trigger, push.branch, push.commit) == (
        Trigger.COMMIT, "main", SHA)
    pr = from_github("pull_request", "d2", {
        "action": "synchronize", "repository": {"clone_url": "https://github.com/o/a.git"},
        "pull_request": {"base": {"ref": "main"}, "head": {"sha": SHA}}})
    assert not isinstance(pr, Ignored) and pr.trigger == Trigger.PULL_REQUEST
    assert isinstance(from_github("push", "d3", {"ref": "refs/tags/v1", "after": SHA, "repository": {
        "clone_url": "https://github.com/o/a.git"}}), Ignored)
    rejection(from_github("push", "d4", {"ref": "refs/heads/main", "after": "nope", "repository": {
                  "clone_url": "https://github.com/o/a.git"}}))
    lab = from_gitlab("Push Hook", {"object_kind": "push", "ref": "refs/heads/dev", "checkout_sha": SHA,
                                    "project": {"git_http_url": "https://gitlab.com/o/a.git"}})
    assert not isinstance(lab, Ignored) and lab.branch == "dev" and "gitlab.com/o/a" in lab.repositories
    azure = from_azure_repos({"id": "e1", "eventType": "git.push", "resource": {
        "refUpdates": [{"name": "refs/heads/main", "newObjectId": SHA}],
        "repository": {"remoteUrl": "https://org@dev.azure.com/org/p/_git/a",
                       "defaultBranch": "refs/heads/main"}}})
    assert not isinstance(azure, Ignored) and "dev.azure.com/org/p/_git/a" in azure.repositories


def test_a_push_runs_the_tasks_of_its_repository_and_branch_once(tmp_path):
    app = FakeApp(tmp_path)
    app.sources.dockerfile = "FROM localhost:5000/base:1\n"
    for name, branch, enabled in (("on", "main", True), ("off", "main", False), ("dev", "dev", True)):
        app.task_store.create(Task(name=name, images=[f"{name}:{{{{.Run.Commit}}}}"],
                                   context="https://github.com/o/a.git", branch=branch,
                                   commit_trigger_enabled=enabled))
    event = from_github("push", "d1", {"ref": "refs/heads/main", "after": SHA,
                                       "repository": {"clone_url": "https://github.com/o/a"}})
    triggers = SourceTriggers(app.tasks, app.triggered)
    outcomes = {d.event_id: d.outcome for d in triggers.handle(event)}
    assert outcomes == {"github:d1:on": "queued", "github:d1:off": "trigger-disabled"}
    triggers.handle(event)  # redelivered
    (run,) = app.runs.all()
    assert run.commit == SHA and run.output_images == [f"localhost:5000/on:{SHA}"]


def test_the_builder_is_asked_for_the_commit_the_run_records(tmp_path):
    # A builder that clones by itself (ACR) must build the commit, not the branch's tip.
    app = FakeApp(tmp_path)
    app.sources.dockerfile = "FROM localhost:5000/base:1\n"
    app.task_store.create(Task(name="on", images=["on:1"], context="https://github.com/o/a.git",
                               branch="main", commit_trigger_enabled=True))
    event = from_github("push", "d9", {"ref": "refs/heads/main", "after": SHA,
                                       "repository": {"clone_url": "https://github.com/o/a"}})
    (decision,) = SourceTriggers(app.tasks, app.triggered).handle(event)
    app.worker.execute(decision.runs[0])
    (request,) = app.builder.requests
    assert (request.context.git_url, request.context.branch, request.context.commit) == (
        "https://github.com/o/a.git", "main", SHA)
