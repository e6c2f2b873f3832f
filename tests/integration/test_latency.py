"""Patch latency on the stack, through the host and the CLI: a base pushed to the registry rebuilds
its dependent, and `base latency` reports exactly the time from the registry's push event to the
dependent's push, as the wave and the run recorded them."""

from __future__ import annotations

import json
import os
import subprocess
import uuid

import requests

from cli.main import main
from shared.domain.vocabulary import RunStatus
from tests.integration.buildah_tools import push_base
from tests.integration.test_pipeline import create_task, wait_for_run


def cli(*args: str) -> int:
    return main([*args, "--url", os.environ["BASETRIGGER_URL"], "--key", os.environ["BASETRIGGER_KEY"]])


def test_the_latency_report_matches_the_recorded_push_and_build_times(stack, tmp_path, capsys):
    name = f"lat{uuid.uuid4().hex[:8]}"
    base = f"{os.environ['REGISTRY']}/{name}/base:1"
    try:
        push_base(tmp_path, base, "one")
        task = create_task(stack, tmp_path, f"{name}-app", base, f"{name}/app:{{{{.Run.ID}}}}")
        new = push_base(tmp_path, base, "two")  # the registry notifies: a wave of one run
        run = wait_for_run(stack, task.name)
        assert run.status == RunStatus.SUCCEEDED and run.cause == f"{base}@{new}", run.reason
        assert run.wave_id and run.pushed_at and run.built_at and run.built_at <= run.pushed_at
        wave, _ = stack.waves.waves.get(run.wave_id)
        assert wave.pushed_at and wave.received_at and wave.pushed_at <= wave.received_at <= wave.created_at

        capsys.readouterr()
        assert cli("base", "latency", "--since", "1h", "--slo", "12h", "--output", "json") == 0
        report = json.loads(capsys.readouterr().out)
        (figures,) = [b for b in report["bases"] if b["base"] == base]
        took = (run.pushed_at - wave.pushed_at).total_seconds()
        assert figures == {"base": base, "events": 1, "closed": 1, "p50_seconds": took, "p95_seconds": took,
                           "worst_seconds": took, "missed_slo": 0}
        (event,) = [e for e in report["events"] if e["base"] == base]
        (dependent,) = event["dependents"]
        assert (event["digest"], event["latency_seconds"], dependent["run_id"], dependent["status"]) == \
            (new, took, run.run_id, "Succeeded")
        assert not [m for m in report["missed"] if m["base"] == base]

        assert cli("base", "latency", "--since", "1h") == 0
        assert base in capsys.readouterr().out
    finally:
        subprocess.run(["buildah", "--storage-driver", "vfs", "rmi", "-f", base], capture_output=True,
                       check=False)


def test_bad_since_and_slo_are_400_with_a_clear_message(stack):
    url, key = os.environ["BASETRIGGER_URL"], os.environ["BASETRIGGER_KEY"]
    for params in ({"since": "7"}, {"slo": "12 hours"}, {"since": "0d"}, {"since": "365d"},
                   {"slo": "-1h"}, {"top": "5"}):
        answer = requests.get(f"{url}/api/bases/latency", params=params, headers={"x-functions-key": key},
                              timeout=60)
        assert answer.status_code == 400, (params, answer.text)
        assert answer.json()["error"]["message"]
