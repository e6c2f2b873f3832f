"""Waves on the real local stack: real buildah builds, the real registry's notifications, Azurite.

The host serves the default caps (8 builds at once, 4 per wave) with a queue trigger that runs up to
6 invocations at once, so a wave's cap is what limits it.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path

import pytest

from shared.bootstrap import Services
from shared.domain.runs import Run
from shared.domain.tasks import Task, TaskError
from shared.domain.vocabulary import Outcome, RunStatus, TriggerType, WaveState
from shared.domain.waves import WaveNotFound
from tests.integration.buildah_tools import BUSYBOX, buildah, push, push_base

# A wave of this many runs checks the cap (`make test` keeps it moderate; `WAVE_RUNS=200` for more).
WAVE_RUNS = int(os.environ.get("WAVE_RUNS", "40"))


@pytest.fixture
def names() -> str:
    return f"wave{uuid.uuid4().hex[:8]}"


def context(tmp_path: Path, name: str, dockerfile: str) -> str:
    folder = tmp_path / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Dockerfile").write_text(dockerfile)
    shutil.copy(BUSYBOX, folder / "busybox")
    return str(folder)


def wave_of(stack: Services, run_id: str, timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run, _ = stack.runs.get(run_id)
        if run.wave_id:
            return run.wave_id
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} has no wave")


def wait_wave(stack: Services, wave_id: str, states: tuple[WaveState, ...] = (WaveState.DONE,),
              timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    wave = None
    while time.monotonic() < deadline:
        try:
            wave, _ = stack.waves.waves.get(wave_id)
        except WaveNotFound:
            # A wave's runs and its row are written side by side: a run may name it first.
            time.sleep(0.5)
            continue
        if wave.state in states:
            return
        time.sleep(1)
    raise AssertionError(f"wave {wave_id} is still {wave and wave.state}: {wave and wave.counts}")


def newest_run(stack: Services, task: str, timeout: float = 120) -> Run:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs, _ = stack.runs.newest(task=task, top=1)
        if runs:
            return runs[0]
        time.sleep(0.5)
    raise AssertionError(f"no run of {task}")


def most_at_once(runs: list[Run]) -> int:
    """The most runs that were building at the same moment, from their recorded times."""
    edges = sorted([(r.started_at, 1) for r in runs if r.started_at] +
                   [(r.finished_at, -1) for r in runs if r.started_at and r.finished_at],
                   key=lambda e: (e[0], e[1]))
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


def test_the_diamond_rebuilds_app_once_after_both_mids_on_their_new_digests(stack, names, tmp_path):
    registry = os.environ["REGISTRY"]
    base, mid1, mid2 = (f"{registry}/{names}/{n}:1" for n in ("base", "mid1", "mid2"))
    push_base(tmp_path, base, "one")
    for mid, version in ((mid1, "m1"), (mid2, "m2")):
        dockerfile = f"FROM {base}\nRUN echo {version} > /mid\n"
        stack.tasks.create(Task(name=f"{names}-{mid.split('/')[-1][:4]}", images=[mid.split("/", 1)[1]],
                                context=context(tmp_path, version, dockerfile)))
    app = stack.tasks.create(Task(
        name=f"{names}-app", images=[f"{names}/app:{{{{.Run.ID}}}}"], trigger_type=TriggerType.ALL,
        context=context(tmp_path, "app", f"FROM {mid1} AS one\nFROM {mid2}\nCOPY --from=one /mid /mid1\n")))

    push_base(tmp_path, base, "two")
    app_run = newest_run(stack, app.name, timeout=300)
    wave_id = wave_of(stack, app_run.run_id)
    wait_wave(stack, wave_id)
    runs = {r.task: r for r in (stack.runs.get(m.run_id)[0] for m in stack.waves.waves.members(wave_id))}
    assert set(runs) == {f"{names}-mid1", f"{names}-mid2", app.name}
    assert all(r.status == RunStatus.SUCCEEDED for r in runs.values()), {t: r.reason for t, r in runs.items()}
    app_runs, _ = stack.runs.newest(task=app.name)
    assert len(app_runs) == 1  # once, not once per mid
    mids = [runs[f"{names}-mid1"], runs[f"{names}-mid2"]]
    assert runs[app.name].started_at >= max(m.finished_at for m in mids)
    assert runs[app.name].base_digests == {mid1: mids[0].output_digest, mid2: mids[1].output_digest}


def test_a_two_task_cycle_is_refused_at_create(stack, names, tmp_path):
    registry = os.environ["REGISTRY"]
    stack.tasks.create(Task(name=f"{names}a", images=[f"{names}/a:latest"],
                            context=context(tmp_path, "a", f"FROM {registry}/{names}/b:latest\n")))
    with pytest.raises(TaskError) as refused:
        stack.tasks.create(Task(name=f"{names}b", images=[f"{names}/b:latest"],
                                context=context(tmp_path, "b", f"FROM {registry}/{names}/a:latest\n")))
    assert str(refused.value).endswith(f"{names}b → {registry}/{names}/b:latest → {names}a → "
                                       f"{registry}/{names}/a:latest → {names}b")


def test_a_cycle_formed_outside_the_service_stops_after_one_pass(stack, names, tmp_path):
    registry = os.environ["REGISTRY"]
    base, image_a, image_b = (f"{registry}/{names}/{n}:latest" for n in ("base", "a", "b"))
    push_base(tmp_path, base, "one")
    a_dir = context(tmp_path, "a", f"FROM {base}\n")
    stack.tasks.create(Task(name=f"{names}a", images=[f"{names}/a:latest"], context=a_dir))
    buildah("bud", "--isolation", "chroot", "-t", image_a, a_dir)
    push(image_a, tmp_path)
    stack.tasks.create(Task(name=f"{names}b", images=[f"{names}/b:latest"],
                            context=context(tmp_path, "b", f"FROM {image_a}\n")))
    buildah("bud", "--isolation", "chroot", "-t", image_b, str(tmp_path / "b"))
    push(image_b, tmp_path)
    # The cycle closes outside the service: a's Dockerfile now builds FROM b; its next run records it.
    Path(a_dir, "Dockerfile").write_text(f"FROM {image_b}\nRUN echo again > /again\n")
    first = stack.scheduler.run_task(f"{names}a")
    wait_wave(stack, wave_of(stack, first.run_id))

    a_runs, _ = stack.runs.newest(task=f"{names}a")
    b_runs, _ = stack.runs.newest(task=f"{names}b")
    assert len(a_runs) == 1 and len(b_runs) == 1  # a, then b on it, then nothing more
    deadline = time.monotonic() + 60
    refused = []
    while not refused and time.monotonic() < deadline:
        refused = [t for d in stack.decisions.recent(top=50, image=image_b) for t in d.tasks
                   if t.outcome == Outcome.ALREADY_RAN_IN_WAVE and t.task == f"{names}a"]
        time.sleep(0.5)
    assert refused and "never re-enters" in refused[0].reason
    assert len(stack.runs.newest(task=f"{names}a")[0]) == 1


def test_caps_hold_in_a_big_wave(stack, names, tmp_path):
    registry = os.environ["REGISTRY"]
    base = f"{registry}/{names}/base:1"
    push_base(tmp_path, base, "one")
    folder = context(tmp_path, "app", f"FROM {base}\n")
    for n in range(WAVE_RUNS):
        stack.tasks.create(Task(name=f"{names}-{n:03d}", images=[f"{names}/app{n:03d}:{{{{.Run.ID}}}}"],
                                context=folder))
    push_base(tmp_path, base, "two")
    wave_id = wave_of(stack, newest_run(stack, f"{names}-000", timeout=300).run_id)
    wait_wave(stack, wave_id, timeout=1200)
    runs = [stack.runs.get(m.run_id)[0] for m in stack.waves.waves.members(wave_id)]
    assert len(runs) == WAVE_RUNS and all(r.status == RunStatus.SUCCEEDED for r in runs)
    assert 1 < most_at_once(runs) <= stack.settings.brakes.wave_max_running


def test_the_breaker_holds_a_wave_whose_base_is_broken(stack, names, tmp_path):
    registry = os.environ["REGISTRY"]
    base = f"{registry}/{names}/base:1"
    push_base(tmp_path, base, "one")
    # Every dependent runs a command the new base lacks (it has no busybox: a "broken" base).
    folder = context(tmp_path, "app", f"FROM {base}\nRUN cat /etc/base-version\n")
    for n in range(10):
        stack.tasks.create(Task(name=f"{names}-{n}", images=[f"{names}/app{n}:{{{{.Run.ID}}}}"],
                                context=folder))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "Dockerfile").write_text("FROM scratch\nCOPY Dockerfile /Dockerfile\n")
    buildah("bud", "--isolation", "chroot", "-t", base, str(broken))
    push(base, tmp_path)
    wave_id = wave_of(stack, newest_run(stack, f"{names}-0", timeout=300).run_id)
    wait_wave(stack, wave_id, (WaveState.HELD,), timeout=600)
    runs = [stack.runs.get(m.run_id)[0] for m in stack.waves.waves.members(wave_id)]
    failed = [r for r in runs if r.status == RunStatus.FAILED]
    held = [r for r in runs if r.status == RunStatus.HELD]
    assert len(failed) >= stack.settings.brakes.breaker_first_failures and held
    assert len(failed) + len(held) + sum(r.status in (RunStatus.QUEUED, RunStatus.RUNNING)
                                         for r in runs) == 10
    wave, _ = stack.waves.waves.get(wave_id)
    assert "circuit breaker" in (wave.reason or "")
    held_decisions = [d for d in stack.decisions.recent(top=500)
                      if d.outcome == Outcome.HELD and f"wave {wave_id} held" in d.reason]
    assert held_decisions and "circuit breaker" in held_decisions[0].reason
    stack.waves.cancel(wave_id)
    assert all(stack.runs.get(r.run_id)[0].status != RunStatus.HELD for r in held)
