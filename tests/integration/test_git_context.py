"""Tasks whose context is a git repository at a branch: shallow clone, token never kept in plain text."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from shared.domain.tasks import Task, TaskError
from shared.domain.vocabulary import TERMINAL, RunStatus
from tests.integration.buildah_tools import push_base

TOKEN = "ghp_" + uuid.uuid4().hex


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                   env=dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@e",
                            GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@e"))


def make_repo(path: Path, dockerfile: str, branch: str) -> str:
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "README").write_text("main branch has no Dockerfile-app\n")
    git(path, "add", ".")
    git(path, "commit", "-qm", "main")
    git(path, "checkout", "-q", "-b", branch)
    (path / "Dockerfile-app").write_text(dockerfile)
    git(path, "add", ".")
    git(path, "commit", "-qm", "app")
    return f"file://{path}"


def test_a_git_context_at_a_branch_builds_and_keeps_the_token_secret(stack, tmp_path):
    registry = os.environ["REGISTRY"]
    name = f"git{uuid.uuid4().hex[:8]}"
    base = f"{registry}/{name}/base:1"
    push_base(tmp_path, base, "g1")
    url = make_repo(tmp_path / "repo", f"FROM {base}\nRUN cat /etc/base-version\n", branch="release")

    task = stack.tasks.create(Task(name=name, images=[f"{name}/app:{{{{.Run.ID}}}}"], context=url,
                                   branch="release", dockerfile="Dockerfile-app", git_token=TOKEN))
    assert [d.image for d in task.dependencies] == [base]  # read from the branch, before any run
    assert TOKEN not in str(task.public_dict()) and task.public_dict()["git_access_token"] is True
    assert TOKEN not in str(dict(stack.tasks.store.table.get_entity("task", name)))

    run_id = stack.scheduler.run_task(name).run_id
    deadline = time.monotonic() + 120
    while (run := stack.runs.get(run_id)[0]).status not in TERMINAL and time.monotonic() < deadline:
        time.sleep(0.5)
    assert run.status == RunStatus.SUCCEEDED, run.reason
    assert TOKEN not in str(run.to_dict()) and TOKEN not in stack.logs.read(run_id).decode()


def test_a_branch_without_the_dockerfile_is_a_clear_error(stack, tmp_path):
    url = make_repo(tmp_path / "repo", "FROM scratch\n", branch="feature")
    with pytest.raises(TaskError, match="no Dockerfile 'Dockerfile-app'"):
        stack.tasks.create(Task(name=f"git{uuid.uuid4().hex[:8]}", images=["x:1"], context=url,
                                branch="main", dockerfile="Dockerfile-app"))
    with pytest.raises(TaskError, match="cannot clone"):
        stack.tasks.create(Task(name=f"git{uuid.uuid4().hex[:8]}", images=["x:1"], context=url,
                                branch="no-such-branch", dockerfile="Dockerfile-app"))
