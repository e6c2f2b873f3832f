"""list-runs benchmark: the API answering `task list-runs` with 1,000, 10,000 and 100,000 runs stored.

Starts its own local Functions host (devhost) on a free port with its own tables in the stack's
Azurite, so the stack's own run history is untouched. For each size it times, over 20 calls each,
`GET /api/runs?top=15` (what `basetrigger task list-runs` sends) and the same filtered by a task
name, and next to each the floor: the same key-range query sent raw with azure-data-tables from
this process, in the same run (what Azurite itself costs, without the host, the SDK pipeline of
the app or the decoding of runs), and a query that matches nothing (on Azurite every query reads
every entity of its table, so that is what any query costs it). Each API read is one key-range
read of one partition, or of the first of the newest-first blocks in key order
(shared/adapters/run_table.py).

Runs are seeded straight into the schema-3 layout (the repository's own rows, batch-inserted 100
to a transaction over their partitions, a few transactions at a time; not timed). 100,000 runs are
about 300,000 entities and take minutes on Azurite, so `--keep` leaves the tables in place and
`--prefix` reuses them: a table that holds a size already is not seeded again.

    python bench/list_runs.py [--runs 1000 10000 100000] [--calls 20] [--prefix lrNAME --keep]
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import requests
from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.data.tables import TableClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared import config  # noqa: E402
from shared.adapters.run_table import LIST_WINDOW, TableRunRepository  # noqa: E402
from shared.adapters.storage import Storage  # noqa: E402
from shared.domain.runs import Run  # noqa: E402
from shared.domain.vocabulary import RunStatus, Trigger, utc_now  # noqa: E402

TASKS = 100
TASK = "task042"
SEED_BATCH = 10_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stored_runs(store: TableRunRepository) -> int:
    """How many runs the table holds: the counter, which `seed` moves on after each batch is in."""
    try:
        return int(store.counters.get_entity("counter", "runs")["Value"])
    except ResourceNotFoundError:
        return 0


def seed(store: TableRunRepository, start: int, count: int) -> None:
    """Runs da<start+1>..da<start+count>, spread over 100 tasks: each run's rows in the schema-3
    layout (its own row in its block, a copy in its task's bucket and its image's), batch-inserted
    by the repository in transactions of 100 rows of one partition, 10,000 runs at a time. The
    counter follows each batch, so a seed that stopped (Azurite busy for too long) goes on from
    the last whole batch when run again; a batch is tried 3 times (its writes are upserts)."""
    began = utc_now() - timedelta(days=30)
    for first in range(start, start + count, SEED_BATCH):
        batch = []
        for n in range(first, min(first + SEED_BATCH, start + count)):
            run_id, started = store.ids.format(n + 1), began + timedelta(seconds=n)
            batch.append(Run(run_id=run_id, status=RunStatus.SUCCEEDED, trigger=Trigger.MANUAL,
                             task=f"task{n % TASKS:03d}", created_at=started, started_at=started,
                             finished_at=started + timedelta(seconds=30),
                             output_images=[f"localhost:5000/app{n % TASKS:03d}:{run_id}"]))
        for attempt in range(3):
            try:
                store.create_many(batch)
                break
            except AzureError:
                if attempt == 2:
                    raise
                time.sleep(5)
        store.counters.upsert_entity({"PartitionKey": "counter", "RowKey": "runs",
                                      "Value": first + len(batch)})
        print(f"  stored {first + len(batch):,}", flush=True)


def timed(call: Callable[[], int], calls: int, expect: int) -> list[float]:
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        got = call()
        times.append((time.perf_counter() - started) * 1000)
        assert got == expect, (got, expect)
    return sorted(times)


def floor_queries(raw: TableClient, store: TableRunRepository, stored: int) -> dict[str, Callable[[], int]]:
    """The two reads the API makes, sent raw: the first page of the newest-first blocks (down to
    the window below the newest run), and of one task's key range in its bucket
    (shared/adapters/run_table.py `newest`)."""
    def first_page(query: str, parameters: dict[str, str]) -> int:
        pages = raw.query_entities(query, parameters=parameters, results_per_page=15).by_page()
        return len(list(next(pages, [])))

    return {
        "top": lambda: first_page(
            "PartitionKey ge @pklo and PartitionKey le @pkhi and RowKey ge @lower and RowKey lt @upper",
            {"pklo": "run|", "pkhi": store._block_of(max(stored - 15 - LIST_WINDOW, 0)),
             "lower": "id|", "upper": "id}"}),
        "task": lambda: first_page(
            "PartitionKey eq @pk and RowKey ge @lower and RowKey lt @upper",
            {"pk": store._task_partition(TASK), "lower": f"task|{TASK}|", "upper": f"task|{TASK}}}"}),
        # A partition that does not exist: in Azure a lookup of nothing; on Azurite the scan every
        # query makes of the whole table (LokiTableMetadataStore.queryTableEntities).
        "scan": lambda: first_page("PartitionKey eq @pk", {"pk": "none"}),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, nargs="+", default=[1000, 10000, 100000], help="cumulative sizes")
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--prefix", help="table prefix to use (sizes it holds are not seeded again)")
    parser.add_argument("--keep", action="store_true", help="leave the tables in place for the next run")
    args = parser.parse_args()
    if not os.environ.get("AzureWebJobsStorage"):
        parser.error("AzureWebJobsStorage is not set: run `make up`, then "
                     "`eval \"$(python scripts/stack.py env)\"`")

    # A SIGTERM (timeout, kill) ends the run through `finally`: the host is stopped with it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    prefix = args.prefix or f"lr{uuid.uuid4().hex[:8]}"
    key, port = secrets.token_urlsafe(16), free_port()
    env = dict(os.environ, BASETRIGGER_TABLE_PREFIX=prefix, BASETRIGGER_BUILD_QUEUE=f"{prefix}-runs",
               BASETRIGGER_RUN_ID_PREFIX="da", DEVHOST_KEY=key)
    store = TableRunRepository(Storage(config.load(env)), "da")
    raw = TableClient.from_connection_string(os.environ["AzureWebJobsStorage"], f"{prefix}runs")
    host = subprocess.Popen([sys.executable, "-m", "devhost", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        session = requests.Session()
        session.trust_env = False
        session.headers["x-functions-key"] = key
        url = f"http://127.0.0.1:{port}/api/runs"
        for _ in range(100):
            try:
                session.get(f"http://127.0.0.1:{port}/admin/host/status", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.2)

        def api(params: dict[str, str | int]) -> Callable[[], int]:
            def call() -> int:
                answer = session.get(url, params=params, timeout=60)
                answer.raise_for_status()
                return len(answer.json()["runs"])
            return call

        print(f"tables {prefix}* (reuse: --prefix {prefix} --keep)", flush=True)
        for size in args.runs:
            stored = stored_runs(store)
            if stored < size:
                print(f"storing runs {stored + 1:,}..{size:,} …", flush=True)
                seed(store, stored, size - stored)
            elif stored > size:
                print(f"  the table holds {stored:,} runs, more than {size:,}: skipped")
                continue
            api({"top": 15})()  # warm the host's clients (and show it where the newest run is)
            floors = floor_queries(raw, store, size)
            cases: tuple[tuple[str, dict[str, str | int], Callable[[], int], int], ...] = (
                ("list-runs --top 15", {"top": 15}, floors["top"], 15),
                (f"list-runs --name {TASK}", {"top": 15, "task": TASK}, floors["task"],
                 min(15, size // TASKS)),
            )
            for label, params, floor, expect in cases:
                times = timed(api(params), args.calls, expect)
                floor_times = timed(floor, args.calls, expect)
                p95 = times[max(0, round(0.95 * len(times)) - 1)]
                print(f"  {size:>7,} runs  {label:<26} p50 {statistics.median(times):6.1f} ms"
                      f"  p95 {p95:6.1f} ms  floor (same query, raw)"
                      f" p50 {statistics.median(floor_times):6.1f} ms"
                      "  (target < 50 ms)", flush=True)
            scan = timed(floors["scan"], args.calls, 0)
            print(f"  {size:>7,} runs  {'a query matching nothing':<26} p50 {statistics.median(scan):6.1f} ms"
                  "  (Azurite reads every entity of the table for any query)", flush=True)
    finally:
        host.terminate()
        host.wait(timeout=40)
        if not args.keep:
            store.storage.drop_all()  # leave the stack's Azurite as it was
    return 0


if __name__ == "__main__":
    sys.exit(main())
