"""Load model: one base push with N dependents, its wave built through 1, 2 and 4 worker processes,
on the local stack's Azurite with Azure's scalability targets enforced.

Only the service's own work is measured: the index rows are seeded directly (N tasks built FROM one
base, no task records), and the workers' builder is instant (a run is claimed, finished Succeeded
and reported to its wave, which releases the next; nothing is built or pushed). Every storage client
goes through shared/adapters/throttling.py (BASETRIGGER_SIMULATE_TARGETS=on: 2,000 entities/s per
partition, 20,000/s per account, 2,000 messages/s per queue, 503 ServerBusy above them, ridden out
by the SDKs' retries), so the figures are what the design meets in Azure, at Azurite's speed or
below.

For each N it prints:
- first release: from the push handed to dispatch until the first run's message is sent;
- answered: until dispatch answered (the wave planned, the first cap's worth recorded and
  released; a big wave's other runs in its backlog);
- all recorded: until the backlog is recorded too (every run has its row);
- the account-level floor: the same number of entities batch-inserted, spread over 100 partitions
  through the same throttle (what the account target alone allows, measured in the same run);
- runs/s sustained by 1, 2 and 4 worker processes, each in its own window of --window seconds on
  the same wave (a run: claim, finish, report, release of the next).

    python bench/scale.py [--sizes 10000 100000] [--workers 1 2 4] [--window 60] [--cap 200]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared import config  # noqa: E402
from shared.adapters.dependency_table import to_entity  # noqa: E402
from shared.adapters.ingress.distribution import from_distribution_envelope  # noqa: E402
from shared.adapters.run_backlog import BlobRunBacklog  # noqa: E402
from shared.adapters.storage import MAX_BATCH, TABLES, TRANSACTIONS_IN_FLIGHT, chunks  # noqa: E402
from shared.bootstrap import Services  # noqa: E402
from shared.domain.builds import BuildResult  # noqa: E402
from shared.domain.dependencies import DependencyRow  # noqa: E402
from shared.domain.messages import decode  # noqa: E402
from shared.domain.vocabulary import RunStatus, TriggerType  # noqa: E402

OLD = "sha256:" + "0" * 64
BASE = "localhost:5000/scale/base:1"
# Entities one dependent costs before dispatch answers: the index row's claim, the run's own row and
# its task copy (runs table) and its wave member (waves table).
ENTITIES_PER_RUN = 4


def environment(prefix: str, cap: int, throttled: bool) -> dict[str, str]:
    env = dict(os.environ)
    env.update(BASETRIGGER_TABLE_PREFIX=prefix, BASETRIGGER_BUILD_QUEUE=f"{prefix}-runs",
               BASETRIGGER_REGISTRY="localhost:5000", BASETRIGGER_RUN_ID_PREFIX="da",
               BASETRIGGER_MAX_RUNNING=str(cap), BASETRIGGER_WAVE_MAX_RUNNING=str(cap),
               BASETRIGGER_SIMULATE_TARGETS="on" if throttled else "off")
    return env


def seed(services: Services, count: int) -> None:
    """Index rows: `count` tasks built FROM the base (set-up, not measured, not throttled)."""
    rows = [to_entity(DependencyRow(base=BASE, task=f"app{n:06d}", runtime=True, trigger_enabled=True,
                                    trigger_type=TriggerType.RUNTIME,
                                    images=[f"app{n:06d}:{{{{.Run.ID}}}}"], built_digest=OLD))
            for n in range(count)]
    with ThreadPoolExecutor(max_workers=TRANSACTIONS_IN_FLIGHT) as pool:
        list(pool.map(lambda batch: services.storage.table("dependencies").submit_transaction(
            [("upsert", e) for e in batch]), chunks(rows)))


def push_envelope() -> dict[str, Any]:
    return {"events": [{
        "id": str(uuid.uuid4()), "timestamp": "2026-11-27T10:00:00Z", "action": "push",
        "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                   "digest": "sha256:" + "1" * 64, "repository": "scale/base", "tag": "1"},
        "request": {"host": "localhost:5000", "method": "PUT"},
    }]}


def account_floor(services: Services, entities: int) -> float:
    """Seconds to batch-insert `entities` run-sized entities spread over 100 partitions, through
    the throttle: only the account's target binds."""
    table = services.storage.table("runs")
    data = "x" * 600  # about a queued run's JSON record
    operations = [("upsert", {"PartitionKey": f"floor|{n % 100:02d}", "RowKey": f"{n:07d}", "Data": data})
                  for n in range(entities)]
    by_partition: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for operation in operations:
        by_partition.setdefault(operation[1]["PartitionKey"], []).append(operation)
    batches = [batch for ops in by_partition.values() for batch in chunks(ops, MAX_BATCH)]
    with ThreadPoolExecutor(max_workers=TRANSACTIONS_IN_FLIGHT) as pool:
        started = time.perf_counter()
        list(pool.map(table.submit_transaction, batches))
        return time.perf_counter() - started


def work(env: dict[str, str], until: float) -> tuple[int, float | None, float | None, int]:
    """One worker process: take messages and build instantly until `until` (wall clock).
    Returns (runs finished, first claim, last finish, attempts that failed)."""
    os.environ.update(env)
    services = Services(config.load(env))
    worker = services.worker
    # The instant builder: the run is finished Succeeded as soon as it is claimed.
    worker._build = lambda run, cancel: worker._finish(  # type: ignore[method-assign]
        run, BuildResult(RunStatus.SUCCEEDED, output_digest="sha256:" + "2" * 64))
    queue = services.storage.queue(env["BASETRIGGER_BUILD_QUEUE"])
    done, first, last, failed = 0, None, None, 0
    while time.time() < until:
        messages = list(queue.receive_messages(messages_per_page=32, max_messages=32, visibility_timeout=120))
        if not messages:
            time.sleep(0.05)
            continue
        for message in messages:
            if time.time() >= until:
                break
            first = first or time.time()
            try:
                if worker.execute(decode(message.content)) is not None:
                    done += 1
                    last = time.time()
                queue.delete_message(message)
            except Exception:  # noqa: BLE001 - as in the host: the message comes back later
                failed += 1
    return done, first, last, failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000, 100000])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--window", type=float, default=60.0, help="seconds each worker count runs")
    parser.add_argument("--cap", type=int, default=200, help="max running, per wave and in all")
    args = parser.parse_args()
    if not os.environ.get("AzureWebJobsStorage"):
        parser.error("AzureWebJobsStorage is not set: run `make up`, then "
                     "`eval \"$(python scripts/stack.py env)\"`")

    print(f"one push, N dependents, throttled to Azure's targets; cap {args.cap} running; instant builder")
    for size in args.sizes:
        prefix = f"scale{uuid.uuid4().hex[:8]}"
        plain = Services(config.load(environment(prefix, args.cap, throttled=False)))
        services = Services(config.load(environment(prefix, args.cap, throttled=True)))
        try:
            for name in TABLES:
                plain.storage.table(name)  # table creation is not part of dispatch
            plain.storage.queue(plain.settings.build_queue)
            seed(plain, size)

            first_send: list[float] = []
            send = services.lifecycle.send

            def noting_send(run_ids: list[str], send: Callable[[list[str]], None] = send,
                            first_send: list[float] = first_send) -> None:
                if run_ids and not first_send:
                    first_send.append(time.perf_counter())
                send(run_ids)

            services.lifecycle.send = noting_send  # type: ignore[method-assign]
            events = from_distribution_envelope(push_envelope())
            assert isinstance(events, list), events  # the bench's own envelope always reads
            started = time.perf_counter()
            (decision,) = services.ingest.receive(events)
            answered = time.perf_counter() - started
            assert len(decision.runs) == size, (len(decision.runs), decision.reason)
            backlog = BlobRunBacklog(services.storage)
            while backlog.waves():
                time.sleep(0.05)
            recorded = time.perf_counter() - started
            first_release = first_send[0] - started
            floor = account_floor(services, size * ENTITIES_PER_RUN)
            print(f"N={size}: first release {first_release:7.1f} s   answered {answered:7.1f} s   "
                  f"all recorded {recorded:7.1f} s   "
                  f"account floor {floor:7.1f} s ({size * ENTITIES_PER_RUN} entities)   "
                  f"ratio {recorded / floor:.2f}x   refused 503: {services.storage.targets.refused}"
                  if services.storage.targets else "")
            env = environment(prefix, args.cap, throttled=True)
            for workers in args.workers:
                until = time.time() + args.window
                with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
                    results = list(pool.map(work, [env] * workers, [until] * workers))
                done = sum(r[0] for r in results)
                firsts = [r[1] for r in results if r[1]]
                lasts = [r[2] for r in results if r[2]]
                span = (max(lasts) - min(firsts)) if firsts and lasts else 0.0
                rate = done / span if span else 0.0
                failed = sum(r[3] for r in results)
                print(f"  {workers} worker process(es): {done} runs in {span:5.1f} s = {rate:6.1f} runs/s"
                      f"  ({failed} attempt(s) failed and were left to redelivery)")
        finally:
            plain.storage.drop_all()  # leave the stack's Azurite as it was
    return 0


if __name__ == "__main__":
    sys.exit(main())
