"""Task timers on hosts of this checkout: a short schedule starts exactly one run per slot while
a second host starts beside the first and the first is stopped (a restart, two instances)."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta

import pytest

from tests.conftest import unique_settings
from tests.own_host import own_host

SCHEDULE = "*/4 * * * * *"  # NCRONTAB, seconds first: a slot every 4 s
STEP = timedelta(seconds=4)
SLOT = re.compile(r"slot (\S+Z)")


@pytest.fixture
def settings():
    settings = unique_settings()
    yield settings
    from shared.bootstrap import Services

    Services(settings).storage.drop_all()


def timer_slots(host, task: str) -> list[datetime]:
    answer = host.api().get(f"{host.url}/api/runs", params={"task": task, "top": 1000}, timeout=30)
    runs = answer.json()["runs"]
    timer_runs = [r for r in runs if r["trigger"] == "Timer"]
    return sorted(datetime.fromisoformat(SLOT.search(r["cause"]).group(1).replace("Z", "+00:00"))
                  for r in timer_runs)


def wait_for_slots(host, task: str, count: int, limit: float = 90) -> list[datetime]:
    deadline = time.monotonic() + limit
    while len(slots := timer_slots(host, task)) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"only {len(slots)} timer runs after {limit} s")
        time.sleep(0.5)
    return slots


def test_a_short_schedule_runs_once_per_slot_across_a_restart_and_two_instances(settings, tmp_path):
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM scratch\nLABEL timer=test\n")
    env = dict(BASETRIGGER_TABLE_PREFIX=settings.table_prefix, BASETRIGGER_BUILD_QUEUE=settings.build_queue,
               BASETRIGGER_TIMER_TICK="1", BASETRIGGER_LOCAL_CONTEXT_ROOTS=str(tmp_path))
    with own_host(tmp_path / "first.log", **env) as first:
        created = first.api().post(f"{first.url}/api/tasks", json={
            "name": "ticking", "images": ["timers/ticking:{{.Run.ID}}"], "context": str(context),
            "schedule": SCHEDULE}, timeout=60)
        assert created.status_code == 201, created.text
        assert created.json()["timers"][0]["schedule"] == SCHEDULE
        wait_for_slots(first, "ticking", 2)
        with own_host(tmp_path / "second.log", **env) as second:
            before = len(wait_for_slots(second, "ticking", 2))
            wait_for_slots(second, "ticking", before + 2)  # both hosts ticking
            first.process.terminate()  # the first host stops: the second goes on alone
            first.process.wait(timeout=40)
            after_stop = len(timer_slots(second, "ticking"))
            slots = wait_for_slots(second, "ticking", after_stop + 2)
            second.api().delete(f"{second.url}/api/tasks/ticking", timeout=30)
    assert len(slots) == len(set(slots)), f"a slot started twice: {slots}"
    gaps = [b - a for a, b in zip(slots, slots[1:], strict=False)]
    assert all(gap == STEP for gap in gaps), f"a slot was missed: {slots}"
