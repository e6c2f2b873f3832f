"""Impact benchmark: `base impact` of a base with 1,000 transitive dependents, next to its floor.

Stores, in fresh tables of the stack's Azurite, a three-level tree under one base: 10 tasks built
FROM it, 9 built FROM each of their output images, 10 FROM each of those (10 + 90 + 900 = 1,000
dependents, every one rebuilding), written straight into the task table and the dependency index
(not timed). Then it times, over --calls calls each:

- floor              the one read impact makes, with nothing computed: the task list's partition,
                     only the graph's properties (TaskRepository.links);
- impact (service)   ImpactAnalysis.impact(base): that read, then the walk and the levels;
- impact (HTTP)      GET /api/bases/{ref}/impact through a host of this checkout (JSON included);
- index reads        for comparison, what the first design read: the dependency index partition
                     of every image that has dependents (1 + 10 + 90), each level's in parallel.

    python bench/impact.py [--calls 20]      (target: impact under 300 ms)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared import config  # noqa: E402
from shared.bootstrap import Services  # noqa: E402
from shared.domain.tasks import Dependency, Task  # noqa: E402
from tests.own_host import own_host  # noqa: E402

REGISTRY = "localhost:5000"
SHAPE = (10, 9, 10)  # children per node, level by level


def seed(services: Services, prefix: str) -> tuple[str, list[list[str]]]:
    """The tree; returns the base and the images read per round (what the floor reads)."""
    base = f"{REGISTRY}/{prefix}/base:1"
    rounds: list[list[str]] = [[base]]
    parents = [base]
    tasks: list[Task] = []
    for depth, fan in enumerate(SHAPE, start=1):
        children = []
        for p, parent in enumerate(parents):
            for c in range(fan):
                name = f"{prefix}-l{depth}-{p:03d}-{c}"
                output = f"{prefix}/{name}:1" if depth < len(SHAPE) else f"{prefix}/{name}:{{{{.Run.ID}}}}"
                tasks.append(Task(name=name, images=[output], context="/ctx",
                                  dependencies=[Dependency(parent, "sha256:" + "0" * 64, True)]))
                children.append(f"{REGISTRY}/{output}")
        if depth < len(SHAPE):
            rounds.append(children)
        parents = children
    store = services.tasks.store

    def add(task: Task) -> None:
        store.create(task)
        services.index.sync_task(task, previous=[])

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(add, tasks))
    return base, rounds


def timed(label: str, call: Callable[[], object], calls: int, target: str = "") -> float:
    call()  # warm the clients
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    p50 = statistics.median(times)
    p95 = times[max(0, round(0.95 * len(times)) - 1)]
    print(f"  {label:<34} p50 {p50:7.1f} ms  p95 {p95:7.1f} ms{target}")
    return p50


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    if not os.environ.get("AzureWebJobsStorage"):
        parser.error("AzureWebJobsStorage is not set: run `make up`, then "
                     "`eval \"$(python3 scripts/stack.py env)\"`")
    prefix = f"im{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, BASETRIGGER_TABLE_PREFIX=prefix, BASETRIGGER_BUILD_QUEUE=f"{prefix}-runs",
               BASETRIGGER_REGISTRY=REGISTRY)
    services = Services(config.load(env))
    try:
        print(f"storing {sum_tree()} tasks in a {len(SHAPE)}-level tree …", flush=True)
        base, rounds = seed(services, prefix)
        impact = services.impact.impact(base)
        assert len(impact.rebuilding) == sum_tree(), len(impact.rebuilding)
        print(f"impact of {base}: {len(impact.rebuilding)} dependents in {len(impact.levels())} levels")
        table = services.index.table
        pool = ThreadPoolExecutor(max_workers=8)

        def index_reads() -> None:
            for images in rounds:
                list(pool.map(table.dependents, images))

        timed("floor (the task list, one read)", services.tasks.store.links, args.calls)
        timed("impact (service)", lambda: services.impact.impact(base), args.calls, "  (target < 300 ms)")
        with own_host(Path("/tmp") / f"{prefix}-host.log", BASETRIGGER_TABLE_PREFIX=prefix,
                      BASETRIGGER_BUILD_QUEUE=f"{prefix}-runs") as host:
            session = host.api()
            url = f"{host.url}/api/bases/{quote(base, safe='')}/impact"

            def http() -> None:
                answer = session.get(url, timeout=60)
                answer.raise_for_status()
                assert answer.json()["rebuilds"] == sum_tree()

            timed("impact (HTTP, JSON of 1,000 tasks)", http, args.calls, "  (target < 300 ms)")
        timed(f"index reads ({impact_reads(rounds)} partitions)", index_reads, max(3, args.calls // 4),
              "  (not used: see shared/service_layer/impact.py)")
    finally:
        services.storage.drop_all()  # leave the stack's Azurite as it was
    return 0


def impact_reads(rounds: list[list[str]]) -> int:
    return sum(map(len, rounds))


def sum_tree() -> int:
    total, width = 0, 1
    for fan in SHAPE:
        width *= fan
        total += width
    return total


if __name__ == "__main__":
    sys.exit(main())
