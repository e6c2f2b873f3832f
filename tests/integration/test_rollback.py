"""`base quarantine --rollback` on the stack's registry, through the CLI and the host: a dependent
rebuilt on a bad base digest goes back to the image it had before, by a run with trigger Rollback
that `task list-runs` shows; a tag only the bad run pushed has no earlier image and is left as it is
(said in the decision, no run); asking again moves nothing and spends no run id."""

from __future__ import annotations

import json
import os
import subprocess
import uuid

import requests

from cli.main import main
from shared.domain.tasks import Task
from shared.domain.vocabulary import EventSource, Outcome, RunStatus, Trigger
from tests.integration.buildah_tools import push_base
from tests.integration.test_pipeline import APP_DOCKERFILE, wait_for_run


def cli(*args: str) -> int:
    return main([*args, "--url", os.environ["BASETRIGGER_URL"], "--key", os.environ["BASETRIGGER_KEY"]])


def test_quarantine_rollback_moves_the_rebuilt_tag_back_to_its_earlier_image(stack, tmp_path, capsys):
    name = f"rb{uuid.uuid4().hex[:8]}"
    registry = os.environ["REGISTRY"]
    base, latest = f"{registry}/{name}/base:1", f"{registry}/{name}/app:latest"
    try:
        good = push_base(tmp_path, base, "good")
        context = tmp_path / "app"
        context.mkdir()
        (context / "Dockerfile").write_text(APP_DOCKERFILE)
        images = [f"{name}/app:latest", f"{name}/app:{{{{.Run.ID}}}}"]
        task = stack.tasks.create(Task(name=f"{name}-app", images=images, context=str(context),
                                       build_args={"BASE": base}))
        answer = requests.post(f"{os.environ['BASETRIGGER_URL']}/api/tasks/{task.name}/runs",
                               headers={"x-functions-key": os.environ["BASETRIGGER_KEY"]}, timeout=60)
        assert answer.status_code in (200, 201, 202), answer.text
        before = wait_for_run(stack, task.name)
        assert before.status == RunStatus.SUCCEEDED and before.output_digest, before.reason

        bad = push_base(tmp_path, base, "bad")  # the registry notifies: a wave rebuilds the app on it
        rebuilt = wait_for_run(stack, task.name, after={before.run_id})
        assert rebuilt.status == RunStatus.SUCCEEDED and rebuilt.cause == f"{base}@{bad}", rebuilt.reason
        assert stack.registry.inspect(latest).digest == rebuilt.output_digest != before.output_digest

        capsys.readouterr()
        assert cli("base", "quarantine", f"{base}@{bad}", "--reason", "broken libc", "--rollback",
                   "--output", "json") == 0
        rollback = json.loads(capsys.readouterr().out)["rollback"]
        (run,) = rollback["runs"]
        assert (run["trigger"], run["status"], run["task"], run["output_images"], run["output_digest"]) == \
            ("Rollback", "Succeeded", task.name, [latest], before.output_digest)
        # The tag points at the old image again: the same manifest, so the same digest.
        assert stack.registry.inspect(latest).digest == before.output_digest
        details = {t["outcome"]: t["reason"] for t in rollback["decision"]["tasks"]}
        own_tag = f"{registry}/{name}/app:{rebuilt.run_id}"  # only the bad run ever pushed it
        assert set(details) == {Outcome.ROLLED_BACK, Outcome.NOT_ROLLED_BACK}
        assert details[Outcome.ROLLED_BACK].startswith(f"{latest} back to {before.output_digest}")
        assert details[Outcome.NOT_ROLLED_BACK] == \
            f"{own_tag}: no earlier image under this tag: left as it is"
        # The task is on the good base again as far as dispatch and staleness are concerned.
        assert [d.digest for d in stack.tasks.get(task.name).dependencies] == [good]

        assert cli("task", "list-runs", "--name", task.name, "--output", "json") == 0
        listed = json.loads(capsys.readouterr().out)
        assert [(r["run_id"], r["trigger"]) for r in listed][0] == (run["run_id"], str(Trigger.ROLLBACK))

        # Again (a retried request, a second --rollback): nothing moves, no run id is spent.
        assert cli("base", "quarantine", f"{base}@{bad}", "--reason", "broken libc", "--rollback",
                   "--output", "json") == 0
        again = json.loads(capsys.readouterr().out)["rollback"]
        assert again["runs"] == [] and again["decision"]["outcome"] == Outcome.NOT_ROLLED_BACK
        assert any("already" in t["reason"] for t in again["decision"]["tasks"])
        assert stack.runs.newest(task=task.name, top=1)[0][0].run_id == run["run_id"]
        recorded = [d for d in stack.decisions.recent(top=20, image=base) if d.source == EventSource.ROLLBACK]
        assert len(recorded) == 2
    finally:
        if "bad" in locals():
            cli("base", "release", f"{base}@{bad}")
        subprocess.run(["buildah", "--storage-driver", "vfs", "rmi", "-f", base], capture_output=True,
                       check=False)
