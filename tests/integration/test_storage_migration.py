"""An upgrade on the real stack: runs, decisions and wave members written raw in the layouts older
versions used (one partition each) answer through the API and the CLI of a host of this checkout,
and `basetrigger admin migrate` moves them into today's partitions, after which they still answer
the same."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from shared.adapters.decision_table import LEGACY as DECISIONS_LEGACY
from shared.adapters.run_table import LEGACY as RUNS_LEGACY
from shared.bootstrap import Services
from tests.conftest import unique_settings
from tests.integration.test_decision_table import _decisions
from tests.integration.test_decision_table import _store_as_schema_1 as _decision_as_schema_1
from tests.integration.test_run_table import _runs, _store_as_schema_2
from tests.integration.test_wave_table import _store_as_schema_1 as _wave_as_schema_1
from tests.integration.test_wave_table import _wave
from tests.own_host import ROOT, own_host

WAVE = "w7001"


@pytest.fixture(scope="module")
def upgraded(tmp_path_factory):
    """Old rows of every kind in fresh tables, and a host of this checkout serving them."""
    services = Services(unique_settings())
    runs = _runs(services.runs, 4, tasks=2)
    for run in runs:
        _store_as_schema_2(services.runs, run)
    decisions = _decisions(6)
    for decision in decisions:
        _decision_as_schema_1(services.decisions, decision)
    wave, members = _wave(services.waves.waves, WAVE, 12)
    _wave_as_schema_1(services.waves.waves, wave, members)
    settings = services.settings
    log = tmp_path_factory.mktemp("host") / "host.log"
    try:
        with own_host(log, BASETRIGGER_TABLE_PREFIX=settings.table_prefix,
                      BASETRIGGER_BUILD_QUEUE=settings.build_queue) as host:
            yield services, host, runs, decisions, members
    finally:
        services.storage.drop_all()


def cli(host, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, BASETRIGGER_URL=host.url, BASETRIGGER_KEY=host.key)
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def _json(host, *args: str):
    answer = cli(host, *args, "-o", "json")
    assert answer.returncode == 0, answer.stderr
    return json.loads(answer.stdout)


def _what_users_see(host) -> dict:
    return {
        "decisions": [d["event_id"] for d in _json(host, "decision", "list", "--top", "10")],
        "by image": [d["event_id"] for d in _json(host, "decision", "list", "--image",
                                                   "localhost:5000/base/node:20")],
        "wave": [(m["task"], m["level"]) for m in _json(host, "wave", "show", WAVE)["members"]],
        "runs": [r["run_id"] for r in host.api().get(f"{host.url}/api/runs", params={"top": 15},
                                                     timeout=30).json()["runs"]],
    }


def _legacy_rows(services: Services) -> dict[str, int]:
    def count(table, partition: str) -> int:
        return len(list(table.query_entities("PartitionKey eq @pk", parameters={"pk": partition},
                                             select=["RowKey"])))

    return {"runs": count(services.runs.table, RUNS_LEGACY),
            "decisions": count(services.decisions.table, DECISIONS_LEGACY),
            "wave": count(services.waves.waves.table, WAVE)}


def test_old_rows_answer_through_the_cli_and_admin_migrate_moves_them(upgraded):
    services, host, runs, decisions, members = upgraded
    before = _what_users_see(host)
    assert before == {
        "decisions": [d.event_id for d in reversed(decisions)],
        "by image": [d.event_id for d in reversed(decisions) if d.image == "localhost:5000/base/node:20"],
        "wave": sorted(((m.task, m.level) for m in members), key=lambda t: (t[1], t[0])),
        "runs": [r.run_id for r in reversed(runs)],
    }
    # The host moved the wave when it first read it; runs and decisions wait for the migration.
    assert _legacy_rows(services) == {"runs": 4 * 3, "decisions": 6 * 2, "wave": 0}

    report = _json(host, "admin", "migrate")
    assert report == {"runs": {"runs": 4, "rows_removed": 12},
                      "decisions": {"decisions": 6, "markers": 6, "holds": 0},
                      "waves": {"waves": 0, "members": 0, "ready_rows": 0}}
    assert _legacy_rows(services) == {"runs": 0, "decisions": 0, "wave": 0}
    assert _what_users_see(host) == before
    text = cli(host, "admin", "migrate")
    assert text.returncode == 0, text.stderr
    assert "decisions moved: 0" in text.stdout and "waves whose members moved: 0" in text.stdout
