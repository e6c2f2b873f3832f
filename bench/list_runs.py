"""list-runs benchmark: the API answering `task list-runs` with 1,000, 10,000 and 100,000 runs stored.

Starts its own local Functions host (devhost) on a free port with fresh tables in the stack's
Azurite, so the stack's own run history is untouched. For each size it times, over 20 calls each,
`GET /api/runs?top=15` (what `basetrigger task list-runs` sends) and the same filtered by a task
name. Flat figures from 1,000 to 100,000 runs are the evidence that no request scans the table:
each is one key-range read of one partition, or of the first of the newest-first blocks in key
order (shared/adapters/run_table.py).

    python bench/list_runs.py [--runs 1000 10000 100000] [--calls 20]
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import statistics
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared import config  # noqa: E402
from shared.adapters.run_table import TableRunRepository  # noqa: E402
from shared.adapters.storage import Storage  # noqa: E402
from shared.domain.runs import Run  # noqa: E402
from shared.domain.vocabulary import RunStatus, Trigger, utc_now  # noqa: E402

TASKS = 100


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def seed(store: TableRunRepository, start: int, count: int) -> None:
    """Runs da<start+1>..da<start+count>, spread over 100 tasks, written in batches of 5,000 (the
    repository groups their rows by partition into transactions; not timed)."""
    ids = store.allocate(count)
    assert ids[0] == f"da{start + 1}", ids[0]
    began = utc_now() - timedelta(days=30)
    batch = []
    for n, run_id in enumerate(ids):
        started = began + timedelta(seconds=start + n)
        batch.append(Run(run_id=run_id, status=RunStatus.SUCCEEDED, trigger=Trigger.MANUAL,
                         task=f"task{n % TASKS:03d}",
                         created_at=started, started_at=started, finished_at=started + timedelta(seconds=30),
                         output_images=[f"localhost:5000/app{n % TASKS:03d}:{run_id}"]))
        if len(batch) == 5000:
            store.create_many(batch)
            batch = []
    if batch:
        store.create_many(batch)


def timed(session: requests.Session, url: str, params: dict[str, Any], calls: int,
          expect: int) -> list[float]:
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        answer = session.get(url, params=params, timeout=30)
        times.append((time.perf_counter() - started) * 1000)
        answer.raise_for_status()
        assert len(answer.json()["runs"]) == expect, answer.text[:200]
    return sorted(times)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, nargs="+", default=[1000, 10000, 100000], help="cumulative sizes")
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    if not os.environ.get("AzureWebJobsStorage"):
        parser.error("AzureWebJobsStorage is not set: run `make up`, then "
                     "`eval \"$(python scripts/stack.py env)\"`")

    prefix = f"lr{uuid.uuid4().hex[:8]}"
    key, port = secrets.token_urlsafe(16), free_port()
    env = dict(os.environ, BASETRIGGER_TABLE_PREFIX=prefix, BASETRIGGER_BUILD_QUEUE=f"{prefix}-runs",
               BASETRIGGER_RUN_ID_PREFIX="da", DEVHOST_KEY=key)
    store = TableRunRepository(Storage(config.load(env)), "da")
    host = subprocess.Popen([sys.executable, "-m", "devhost", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        session = requests.Session()
        session.headers["x-functions-key"] = key
        url = f"http://127.0.0.1:{port}/api/runs"
        for _ in range(100):
            try:
                session.get(f"http://127.0.0.1:{port}/admin/host/status", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        stored = 0
        for size in args.runs:
            print(f"storing runs {stored + 1}..{size} …", flush=True)
            seed(store, stored, size - stored)
            stored = size
            session.get(url, params={"top": 15}, timeout=30)  # warm the host's clients
            for label, params, expect in (
                ("list-runs --top 15", {"top": 15}, 15),
                ("list-runs --name task042", {"top": 15, "task": "task042"}, min(15, size // TASKS)),
            ):
                times = timed(session, url, params, args.calls, expect)
                p95 = times[max(0, round(0.95 * len(times)) - 1)]
                print(f"  {size:>6} runs  {label:<26} p50 {statistics.median(times):6.1f} ms"
                      f"  p95 {p95:6.1f} ms  (target < 50 ms)")
    finally:
        host.terminate()
        host.wait(timeout=40)
        store.storage.drop_all()  # leave the stack's Azurite as it was
    return 0


if __name__ == "__main__":
    sys.exit(main())
