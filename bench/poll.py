"""Polling benchmark on the local stack: one poll cycle over many distinct bases, and detection time.

Set-up (not measured): one tiny image manifest is pushed to the stack's registry without
notifications (PUBLIC_REGISTRY) under N tags through the registry API (`PUT /v2/<name>/manifests/<tag>`,
the same manifest each time), and N dependency-index rows name those N tags as bases of 100 tasks.

Measured, for each N (default 1,000 and 10,000):
- floor: the raw HEAD rate for the same N tags, same client and concurrency, nothing stored;
- cycle: `Poller.cycle()` over the N bases (index scan and base rows read, N manifest HEADs, the
  rows that changed written), and its request rate: the first cycle writes N rows (first sight),
  the next one none (each base's last check comes from its registry's sweep row).
Then detection: cycles run every --interval seconds as the timer runs them; at a random moment in
the cycle one tag is moved to a new manifest; the time from that PUT to the run being queued is
measured --trials times (target: within one interval + 5 s).

    eval "$(python3 scripts/stack.py env)"; python bench/poll.py [--sizes 1000 10000] [--interval 10]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared import config  # noqa: E402
from shared.adapters.dependency_table import to_entity  # noqa: E402
from shared.adapters.storage import TABLES  # noqa: E402
from shared.bootstrap import Services  # noqa: E402
from shared.domain.dependencies import DependencyRow  # noqa: E402
from shared.domain.vocabulary import TriggerType  # noqa: E402

CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
TASKS = 100


class Registry:
    """Just enough of the registry API to make tags (pushed without notifications)."""

    def __init__(self, host: str, ca: str):
        self.host, self.ca = host, ca
        self.session = requests.Session()
        self.session.trust_env = False
        adapter = requests.adapters.HTTPAdapter(pool_maxsize=64)
        self.session.mount("https://", adapter)

    def blob(self, repo: str, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        start = self.session.post(f"https://{self.host}/v2/{repo}/blobs/uploads/", verify=self.ca)
        start.raise_for_status()
        location = start.headers["Location"]
        url = location if location.startswith("http") else f"https://{self.host}{location}"
        sep = "&" if "?" in url else "?"
        self.session.put(f"{url}{sep}digest={digest}", data=data, verify=self.ca,
                         headers={"Content-Type": "application/octet-stream"}).raise_for_status()
        return digest

    def manifest(self, repo: str, label: str) -> bytes:
        config_blob = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": {"v": label}},
                                  "rootfs": {"type": "layers", "diff_ids": []}}).encode()
        digest = self.blob(repo, config_blob)
        return json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_TYPE, "config": {
            "mediaType": CONFIG_TYPE, "digest": digest, "size": len(config_blob)}, "layers": []}).encode()

    def tag(self, repo: str, tag: str, manifest: bytes) -> str:
        response = self.session.put(f"https://{self.host}/v2/{repo}/manifests/{tag}", data=manifest,
                                    verify=self.ca, headers={"Content-Type": MANIFEST_TYPE})
        response.raise_for_status()
        return response.headers["Docker-Content-Digest"]


def fresh_services(concurrency: int, interval: int) -> Services:
    suffix = uuid.uuid4().hex[:10]
    env = dict(os.environ, BASETRIGGER_TABLE_PREFIX=f"bench{suffix}",
               BASETRIGGER_BUILD_QUEUE=f"bench-{suffix}", BASETRIGGER_POLL_CONCURRENCY=str(concurrency),
               BASETRIGGER_POLL_INTERVAL=str(interval))
    services = Services(config.load(env))
    for name in TABLES:
        services.storage.table(name)
    services.storage.queue(services.settings.build_queue)
    return services


def seed_index(services: Services, bases: list[str], digest: str) -> None:
    """One row per base, TASKS tasks sharing them (each base is its own partition: written in parallel)."""
    table = services.storage.table("dependencies")
    rows = [to_entity(DependencyRow(base=b, task=f"bench{n % TASKS:03d}", runtime=True,
                                    trigger_enabled=True, trigger_type=TriggerType.RUNTIME,
                                    images=[f"bench/out{n % TASKS}:{{{{.Run.ID}}}}"],
                                    built_digest=digest, platform="linux"))
            for n, b in enumerate(bases)]
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(table.upsert_entity, rows))


def floor(services: Services, bases: list[str], concurrency: int) -> float:
    client = services.registry.distribution
    with ThreadPoolExecutor(concurrency) as pool:
        started = time.monotonic()
        list(pool.map(client.inspect, bases))
        return time.monotonic() - started


def detection(services: Services, registry: Registry, repo: str, bases: list[str], interval: int,
              trials: int) -> list[float]:
    """Cycles on the timer's schedule in the background; a tag moved at a random moment."""
    stop = threading.Event()

    def timer() -> None:
        next_at = time.monotonic()
        while not stop.is_set():
            services.poller.cycle()
            next_at += interval
            while next_at < time.monotonic():
                next_at += interval  # like the host: a missed occurrence is skipped
            stop.wait(next_at - time.monotonic())

    thread = threading.Thread(target=timer, daemon=True)
    thread.start()
    times = []
    try:
        time.sleep(interval + 1)  # the first cycle has seen every base
        for trial in range(trials):
            index = random.randrange(len(bases))
            task = f"bench{index % TASKS:03d}"
            time.sleep(random.uniform(0, interval))
            before = {r.run_id for r in services.runs.newest(task=task, top=50)[0]}
            moved = registry.manifest(repo, f"trial-{trial}-{index}")  # its config blob is set-up
            pushed_at = time.monotonic()
            registry.tag(repo, bases[index].rsplit(":", 1)[1], moved)
            while True:
                runs = [r for r in services.runs.newest(task=task, top=50)[0] if r.run_id not in before]
                if runs:  # recorded Queued by the dispatch (nobody consumes this queue)
                    times.append(time.monotonic() - pushed_at)
                    break
                if time.monotonic() - pushed_at > 3 * interval + 60:
                    raise RuntimeError(f"no run queued for {bases[index]}")
                time.sleep(0.1)
    finally:
        stop.set()
        thread.join(timeout=300)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--interval", type=int, default=10, help="detection: seconds between cycles")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    host = os.environ.get("PUBLIC_REGISTRY")
    ca = os.environ.get("BASETRIGGER_REGISTRY_CA")
    if not host or not ca:
        print("run on the local stack: eval \"$(python3 scripts/stack.py env)\"", file=sys.stderr)
        return 2
    registry = Registry(host, ca)
    repo = f"bench{uuid.uuid4().hex[:8]}/base"
    manifest = registry.manifest(repo, "v1")
    made: list[Services] = []
    print(f"registry {host} (no notifications), concurrency {args.concurrency}, "
          f"{TASKS} tasks sharing the bases")
    try:
        tags_made = 0
        digest = ""
        for size in sorted(args.sizes):
            started = time.monotonic()
            with ThreadPoolExecutor(32) as pool:
                digests = list(pool.map(lambda n: registry.tag(repo, f"t{n:05d}", manifest),
                                        range(tags_made, size)))
            digest = digests[0] if digests else digest
            tags_made = max(tags_made, size)
            bases = [f"{host}/{repo}:t{n:05d}" for n in range(size)]
            services = fresh_services(args.concurrency, args.interval)
            made.append(services)
            seed_index(services, bases, digest)
            setup = time.monotonic() - started
            raw = floor(services, bases, args.concurrency)
            report = services.poller.cycle()
            assert (report.polled, report.checked, report.changed) == (size, size, 0), report.to_dict()
            again = services.poller.cycle()
            print(f"N={size:>6}: floor (raw HEADs) {raw:6.2f} s = {size / raw:6.0f} req/s | "
                  f"first cycle {report.seconds:6.2f} s = {report.requests / report.seconds:6.0f} req/s "
                  f"({report.written} rows written) | "
                  f"steady cycle {again.seconds:6.2f} s = {again.requests / again.seconds:6.0f} req/s "
                  f"({again.seconds / raw:.2f}x floor; {again.requests} requests, "
                  f"{again.written} rows written) [set-up {setup:.0f} s]")
        services = made[0]
        size = min(args.sizes)
        bases = [f"{host}/{repo}:t{n:05d}" for n in range(size)]
        times = detection(services, registry, repo, bases, args.interval, args.trials)
        print(f"detection over N={size} with a {args.interval} s interval: "
              + ", ".join(f"{t:.1f} s" for t in times)
              + f" (worst {max(times):.1f} s; target interval + 5 s = {args.interval + 5} s)")
    finally:
        for services in made:
            services.storage.drop_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
