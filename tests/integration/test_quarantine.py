"""Quarantine on the stack, through the CLI and the host: a quarantined digest pushed to the registry
starts nothing and says why; after `base release`, the next push of it rebuilds the dependent; a
manual run on it is refused with the same words."""

from __future__ import annotations

import os
import subprocess
import time
import uuid

import requests

from cli.main import main
from shared.domain.vocabulary import EventSource, Outcome, RunStatus
from tests.integration.buildah_tools import _tls, buildah, push, push_base
from tests.integration.test_pipeline import create_task, wait_for_decision, wait_for_run


def cli(*args: str) -> int:
    return main([*args, "--url", os.environ["BASETRIGGER_URL"], "--key", os.environ["BASETRIGGER_KEY"]])


def test_a_quarantined_digest_starts_nothing_and_release_lets_the_next_push_through(stack, tmp_path, capsys):
    name = f"q{uuid.uuid4().hex[:8]}"
    registry = os.environ["REGISTRY"]
    base, staging = f"{registry}/{name}/base:1", f"{registry}/{name}/base:staging"
    try:
        push_base(tmp_path, base, "good")
        task = create_task(stack, tmp_path, f"{name}-app", base, f"{name}/app:{{{{.Run.ID}}}}")
        # The bad digest, known before it reaches the watched tag (its staging tag has no dependents).
        bad = push_base(tmp_path, staging, "bad")
        target = f"{base}@{bad}"
        assert cli("base", "quarantine", target, "--reason", "CVE-2026-0001 in busybox") == 0
        assert "quarantined" in capsys.readouterr().out

        def push_bad_to_the_watched_tag() -> None:
            buildah("push", *_tls(), staging, f"docker://{base}")

        push_bad_to_the_watched_tag()
        blocked = wait_for_decision(stack, base, bad, Outcome.QUARANTINED)
        assert blocked.reason == "quarantined: CVE-2026-0001 in busybox" and blocked.runs == []

        answer = requests.post(f"{os.environ['BASETRIGGER_URL']}/api/tasks/{task.name}/runs",
                               headers={"x-functions-key": os.environ["BASETRIGGER_KEY"]}, timeout=60)
        assert answer.status_code == 409, answer.text
        assert answer.json()["error"] == {"code": "Quarantined",
                                          "message": "quarantined: CVE-2026-0001 in busybox"}
        assert stack.runs.newest(task=task.name)[0] == []
        # recorded before the answer: `decision list` and `task why` say why the run did not start
        (refused,) = [d for d in stack.decisions.recent(top=20, image=base) if d.source == EventSource.MANUAL]
        assert (refused.reason, refused.digest) == ("quarantined: CVE-2026-0001 in busybox", bad)

        assert cli("base", "release", target) == 0
        push_bad_to_the_watched_tag()  # the registry notifies again: a new event, decided anew
        run = wait_for_run(stack, task.name)
        assert run.status == RunStatus.SUCCEEDED and run.cause == f"{base}@{bad}", run.reason
        assert cli("base", "release", target) != 0  # released already: 404, said on stderr
        assert "not quarantined" in capsys.readouterr().err
    finally:
        for image in (base, staging):
            subprocess.run(["buildah", "--storage-driver", "vfs", "rmi", "-f", image], capture_output=True,
                           check=False)


def test_quarantine_input_mistakes_are_400(stack):
    url, key = os.environ["BASETRIGGER_URL"], os.environ["BASETRIGGER_KEY"]
    for body in ({}, {"image": "node:20", "reason": "no digest"}, {"image": "node:20@sha256:" + "1" * 64},
                 {"image": "node:20@sha256:" + "1" * 64, "reason": "x", "extra": 1}, ["not", "an object"]):
        answer = requests.post(f"{url}/api/bases/quarantine", json=body, headers={"x-functions-key": key},
                               timeout=30)
        assert answer.status_code == 400, (body, answer.text)
        assert answer.json()["error"]["message"]
    answer = requests.post(f"{url}/api/bases/release", json={"image": "node:20@sha256:" + "2" * 64},
                           headers={"x-functions-key": key}, timeout=30)
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "NotQuarantined"


def test_a_held_wave_quarantines_its_digest_and_a_later_push_of_it_starts_nothing(stack, tmp_path):
    """The breaker on the stack: a base without a shell fails every build FROM it; the wave is held,
    its digest quarantined with the breaker's reason, and the same digest pushed again (as a
    registry re-sends it, or another tag gets it) starts nothing, for a task added since too."""
    name = f"qb{uuid.uuid4().hex[:8]}"
    base = f"{os.environ['REGISTRY']}/{name}/base:1"
    tasks: list[str] = []
    bad = ""
    try:
        push_base(tmp_path, base, "good")
        # More dependents than a wave builds at once (4): some are still unreleased when it trips.
        tasks = [create_task(stack, tmp_path, f"{name}-{n}", base, f"{name}/app{n}:{{{{.Run.ID}}}}").name
                 for n in range(8)]
        broken = tmp_path / "broken"
        broken.mkdir()
        (broken / "Dockerfile").write_text("FROM scratch\nCOPY Dockerfile /no-shell-here\n")
        buildah("bud", "--isolation", "chroot", "--layers=false", "-t", base, str(broken))
        bad = push(base, tmp_path)
        entry = wait_for_quarantine(stack, bad)
        assert entry.by.startswith("circuit breaker of wave w")
        assert entry.reason.startswith("circuit breaker:")

        later = create_task(stack, tmp_path, f"{name}-later", base, f"{name}/later:{{{{.Run.ID}}}}").name
        tasks.append(later)
        assert push(base, tmp_path) == bad  # the registry notifies this push as a new event
        again = wait_for_decision(stack, base, bad, Outcome.QUARANTINED)
        assert again.reason == entry.decision and again.runs == []
        assert stack.runs.newest(task=later)[0] == []
    finally:
        for task in tasks:
            stack.tasks.delete(task)
        subprocess.run(["buildah", "--storage-driver", "vfs", "rmi", "-f", base], capture_output=True,
                       check=False)
        if bad:
            stack.quarantine.store.remove(bad)


def wait_for_quarantine(stack, digest: str, timeout: float = 240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in stack.quarantine.entries() if e.digest == digest]
        if found:
            return found[0]
        time.sleep(1)
    raise AssertionError(f"{digest} was not quarantined within {timeout}s")
