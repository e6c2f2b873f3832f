"""Wave members benchmark: writing and reading the members of one wave of N, on the stack's Azurite.

Times TableWaveRepository.create for a wave of N members, all ready (N member rows and N ready
rows, batch-inserted), then members() (every member) and ready(20) (the next to release, p50 of
10 calls), in fresh tables that are dropped afterwards. Run it in a checkout of the version to
compare (schema 1: one partition per wave; schema 2: 8 buckets per wave).

    make up && eval "$(python3 scripts/stack.py env)"
    python3 bench/wave_members.py [--members 10000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared import config  # noqa: E402
from shared.adapters.storage import Storage  # noqa: E402
from shared.adapters.wave_table import TableWaveRepository  # noqa: E402
from shared.domain.runs import RunIds  # noqa: E402
from shared.domain.waves import Member, Wave  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=10_000)
    args = parser.parse_args()
    if not os.environ.get("AzureWebJobsStorage"):
        parser.error("AzureWebJobsStorage is not set: run `make up`, then "
                     "`eval \"$(python scripts/stack.py env)\"`")
    count = args.members
    storage = Storage(config.load(dict(os.environ, BASETRIGGER_TABLE_PREFIX=f"wm{uuid.uuid4().hex[:8]}")))
    store = TableWaveRepository(storage, RunIds("da"))
    try:
        members = [Member(wave_id="w1", task=f"task{n:06d}", run_id=f"da{n + 1}", level=0)
                   for n in range(count)]
        wave = Wave(wave_id="w1", root="localhost:5000/base@sha256:" + "0" * 64, event_id=None)
        assert store.table is not None  # the table exists before the clock starts
        started = time.perf_counter()
        store.create(wave, members)
        create = time.perf_counter() - started
        started = time.perf_counter()
        assert len(store.members("w1")) == count
        read = time.perf_counter() - started
        times = []
        for _ in range(10):
            started = time.perf_counter()
            assert len(store.ready("w1", 20)) == 20
            times.append((time.perf_counter() - started) * 1000)
        print(f"wave of {count:,}: create {create:.1f} s ({2 * count / create:,.0f} entities/s), "
              f"members() {read:.2f} s, ready(20) p50 {statistics.median(times):.0f} ms")
    finally:
        storage.drop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
