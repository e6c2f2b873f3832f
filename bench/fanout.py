"""Fan-out benchmark: one base push with N dependent tasks, on the local stack's Azurite.

Measures (median of --repeat runs), from the moment the registry's notification is handed to the
ingress code (envelope parsed, dispatch started) until the push is answered: the wave planned and
the first cap's worth released (their messages on the queue; the rest wait without one). A big
wave's waiting runs are recorded after that, from its backlog (shared.service_layer.run_life):
"all recorded" is when the last of them is. Next to it, the floor: Azurite's batch insert rate for
the same number of entities (the run's rows and its wave member row, in transactions of 100, as many
in flight as dispatch uses). Also the push -> queued latency for N = 1 over 50 pushes. Every run
uses fresh tables and queue. The targets are issue 15's.

    python bench/fanout.py [--sizes 1 100 1000 10000] [--pushes 50] [--repeat 3] [--trace 5]

`--trace K` prints, for the last K of the N=1 pushes, every storage round trip the push made before
it answered (HTTP method, table/queue/container, ms from the push's start, duration, thread): the
breakdown in docs/scale.md ("push -> queued at N=1").
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared import config  # noqa: E402
from shared.adapters.dependency_table import to_entity  # noqa: E402
from shared.adapters.ingress.distribution import from_distribution_envelope  # noqa: E402
from shared.adapters.run_backlog import BlobRunBacklog  # noqa: E402
from shared.adapters.storage import MAX_BATCH, TABLES, TRANSACTIONS_IN_FLIGHT, chunks  # noqa: E402
from shared.bootstrap import Services  # noqa: E402
from shared.domain.dependencies import DependencyRow  # noqa: E402
from shared.domain.vocabulary import TriggerType  # noqa: E402

OLD = "sha256:" + "0" * 64


_CREATED: list[Services] = []


class RoundTrips:
    """Every HTTP request the storage SDKs send, timed at the shared transport (one list per push)."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, float, str, str, str]] = []  # start, ms, method, target, thread
        self.started = 0.0
        self._lock = threading.Lock()

    def install(self) -> None:
        from azure.core.pipeline.transport import RequestsTransport

        original = RequestsTransport.send
        trips = self

        def send(transport: Any, request: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return original(transport, request, **kwargs)
            finally:
                ms = (time.perf_counter() - began) * 1000
                path = urlsplit(request.url).path.split("/")
                target = "/".join(part for part in path[2:4] if part)[:60]  # skip the account name
                with trips._lock:
                    trips.calls.append((began - trips.started, ms, request.method, target,
                                        threading.current_thread().name))

        RequestsTransport.send = send

    def begin(self) -> None:
        with self._lock:
            self.calls, self.started = [], time.perf_counter()

    def print(self, answered_ms: float) -> None:
        with self._lock:
            calls = sorted(self.calls)
        print(f"  one push, answered in {answered_ms:.1f} ms, {len(calls)} round trips:")
        for start, ms, method, target, thread in calls:
            after = "  (after the answer)" if start * 1000 > answered_ms else ""
            print(f"    +{start * 1000:6.1f} ms {ms:6.1f} ms  {method:6} {target:<60} {thread}{after}")


def fresh_services(max_running: int | None = None) -> Services:
    """Services on fresh tables and queue; `max_running`: the global cap (None: the settings')."""
    suffix = uuid.uuid4().hex[:10]
    env = dict(os.environ)
    env.update(BASETRIGGER_TABLE_PREFIX=f"bench{suffix}", BASETRIGGER_BUILD_QUEUE=f"bench-{suffix}",
               BASETRIGGER_REGISTRY="localhost:5000")
    if max_running is not None:
        env["BASETRIGGER_MAX_RUNNING"] = str(max_running)
    services = Services(config.load(env))
    for name in TABLES:
        services.storage.table(name)  # create up front: table creation is not part of dispatch
    services.storage.queue(services.settings.build_queue)
    _CREATED.append(services)
    return services


def seed(services: Services, base: str, count: int, prefix: str = "app") -> None:
    """Index rows written in batches (set-up, not measured)."""
    rows = [to_entity(DependencyRow(base=base, task=f"{prefix}{n:05d}", runtime=True, trigger_enabled=True,
                                    trigger_type=TriggerType.RUNTIME,
                                    images=[f"{prefix}{n:05d}:{{{{.Run.ID}}}}"], built_digest=OLD))
            for n in range(count)]
    for batch in chunks(rows):
        services.storage.table("dependencies").submit_transaction([("upsert", e) for e in batch])


def envelope(repository: str, tag: str, digest: str) -> dict[str, Any]:
    return {"events": [{
        "id": str(uuid.uuid4()), "timestamp": "2026-11-27T10:00:00Z", "action": "push",
        "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest,
                   "repository": repository, "tag": tag},
        "request": {"host": "localhost:5000", "method": "PUT"},
    }]}


def dispatch(services: Services, body: dict[str, Any]) -> tuple[float, int]:
    started = time.perf_counter()
    events = from_distribution_envelope(body)
    assert isinstance(events, list), events  # the bench's own envelope always reads
    decisions = services.ingest.receive(events)
    decision = decisions[-1] if decisions else None
    elapsed = time.perf_counter() - started
    return elapsed, len(decision.runs) if decision else 0


def all_recorded(services: Services, started: float, timeout: float = 3600) -> float:
    """Seconds from `started` until no backlog is left (every run of the wave recorded)."""
    backlog = BlobRunBacklog(services.storage)
    while backlog.waves():
        if time.perf_counter() - started > timeout:
            raise TimeoutError("the backlog was not recorded")
        time.sleep(0.05)
    return time.perf_counter() - started


def queue_depth(services: Services) -> int:
    props = services.storage.queue(services.settings.build_queue).get_queue_properties()
    return props.approximate_message_count or 0  # the SDK types it Optional


# Entities a planned run writes: its id row and task row (runs table), its member row (waves table).
ENTITIES_PER_RUN = 3


def floor(runs: int) -> float:
    """Azurite's batch insert rate: the same entity count as `runs` recorded runs, in transactions of
    100, TRANSACTIONS_IN_FLIGHT at once, of entities the size of a run row."""
    services = fresh_services()
    table = services.storage.table("runs")
    data = "x" * 600  # about a queued run's JSON record
    batches = [[("upsert", {"PartitionKey": "run", "RowKey": f"r{b:05d}-{n:03d}", "Data": data})
                for n in range(min(MAX_BATCH, runs * ENTITIES_PER_RUN - b * MAX_BATCH))]
               for b in range((runs * ENTITIES_PER_RUN + MAX_BATCH - 1) // MAX_BATCH)]
    with ThreadPoolExecutor(max_workers=TRANSACTIONS_IN_FLIGHT) as pool:
        started = time.perf_counter()
        list(pool.map(table.submit_transaction, batches))
        return time.perf_counter() - started


def read_floor(services: Services, base: str) -> float:
    """What any dispatch of the push does at least: read the base's N index rows (one query)."""
    started = time.perf_counter()
    services.index.dependents(base)
    return time.perf_counter() - started


def insert_p50(services: Services, count: int = 50) -> float:
    """The latency floor: one entity insert into the runs table, p50 in ms, on the same stack."""
    table = services.storage.table("runs")
    times = []
    for n in range(count):
        started = time.perf_counter()
        table.upsert_entity({"PartitionKey": "floor", "RowKey": f"r{n:04d}", "Data": "x" * 600})
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 100, 1000, 10000])
    parser.add_argument("--pushes", type=int, default=50, help="pushes for the N=1 latency figures")
    parser.add_argument("--trace", type=int, default=0,
                        help="print the storage round trips of the last TRACE N=1 pushes")
    parser.add_argument("--answered-only", action="store_true",
                        help="time the answer only, next to the index read it needs (no waiting for "
                             "every run to be recorded, no insert floor: for N=100,000 they take "
                             "tens of minutes here)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="fan-outs and floors measured per size; the median is printed "
                             "(shared machines are noisy)")
    args = parser.parse_args()
    if not os.environ.get("AzureWebJobsStorage"):
        parser.error("AzureWebJobsStorage is not set: run `make up`, then "
                     "`eval \"$(python scripts/stack.py env)\"`")

    print("fan-out: one push, N dependents -> a wave of N runs planned, the first cap's worth released")
    fanout = {}
    for size in args.sizes:
        times, recorded, floors, reads = [], [], [], []
        for _ in range(args.repeat if size < 10000 else 1):
            services = fresh_services()
            seed(services, "localhost:5000/bench/base:1", size)
            reads.append(read_floor(services, "localhost:5000/bench/base:1"))
            started = time.perf_counter()
            elapsed, runs = dispatch(services, envelope("bench/base", "1", "sha256:" + "1" * 64))
            depth = queue_depth(services)
            released = min(size, services.settings.brakes.wave_max_running)
            assert runs == size and depth == released, (runs, depth)
            times.append(elapsed)
            if not args.answered_only:
                recorded.append(all_recorded(services, started))
                floors.append(floor(size))
        fanout[size] = statistics.median(times)
        target = {1000: "  (target < 500 ms)", 10000: "  (target < 2000 ms)",
                  100000: "  (target < 20000 ms)"}.get(size, "")
        if args.answered_only:
            print(f"  N={size:<6} answered {fanout[size] * 1000:9.1f} ms  floor: reading its {size} index "
                  f"rows {statistics.median(reads) * 1000:9.1f} ms  median of {len(times)}; "
                  f"{released} released{target}")
            continue
        base = statistics.median(floors)
        print(f"  N={size:<6} answered {fanout[size] * 1000:9.1f} ms  all recorded "
              f"{statistics.median(recorded) * 1000:9.1f} ms  floor {base * 1000:9.1f} ms "
              f"({size * ENTITIES_PER_RUN} entities batch-inserted)  ratio {fanout[size] / base:.2f}x"
              f"  median of {len(times)}; {released} released{target}  (reading the index "
              f"rows: {statistics.median(reads) * 1000:.1f} ms)")

    # Room under the global cap for every push: each one's run is released and its message sent
    # (with the default cap of 8, the 9th push on would only record a waiting run: not "queued").
    services = fresh_services(max_running=args.pushes)
    for n in range(args.pushes):
        seed(services, f"localhost:5000/bench/latency{n}:1", 1, prefix=f"lat{n}-")
    trips = RoundTrips()
    if args.trace:
        trips.install()
    latencies = []
    for n in range(args.pushes):
        trips.begin()
        elapsed, runs = dispatch(services, envelope(f"bench/latency{n}", "1", "sha256:" + "2" * 64))
        latencies.append(elapsed * 1000)
        if n >= args.pushes - args.trace:
            time.sleep(0.2)  # let what runs after the answer show too
            trips.print(elapsed * 1000)
        assert runs == 1 and queue_depth(services) == n + 1, "the push's run was not sent"
    latencies.sort()
    p50 = statistics.median(latencies)
    p95 = latencies[max(0, int(round(0.95 * len(latencies))) - 1)]
    print(f"push -> queued, N=1 over {args.pushes} pushes: p50 {p50:.1f} ms, p95 {p95:.1f} ms"
          f"  (target p50 < 25 ms; floor: one entity insert p50 {insert_p50(services):.1f} ms)")

    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        for created in _CREATED:  # leave the stack's Azurite as it was
            created.storage.drop_all()
