#!/usr/bin/env python3
"""The first thing to run after `azd up`: the whole cloud path, end to end, on a real deployment.

    make smoke-azure BASETRIGGER_URL=https://<app host> BASETRIGGER_KEY=<function key>
    python3 scripts/smoke_azure.py --url https://<app host> --key <function key> [--keep]

Not run in CI (it needs a deployment, and ACR runs cost money and minutes). With a unique name
`smoke-<id>`, it:

1. quick-builds a tiny image (`FROM scratch`) through ACR: the upload, `scheduleRun`, the log, the
   push; its output name tells the registry's login server;
2. creates a task on a public git repository (default: Azure-Samples/acr-build-helloworld-node,
   `Dockerfile-app`, whose `FROM ${REGISTRY_NAME}/baseimages/node:...` is pointed at
   `<login server>/smoke-<id>`, so nothing else in the registry is touched): the app clones the
   repository and reads the Dockerfile;
3. quick-builds that base (FROM the `--upstream` node image, pulled by ACR);
4. runs the task (ACR clones the repository itself) and waits for it to succeed;
5. pushes a new version of the base (a quick build again) and waits for the automatic
   `Image Update` run the push must cause (Event Grid -> dispatch -> queue -> worker -> ACR);
6. deletes the task (unless --keep). The images stay in the registry under `smoke-<id>/`; the
   script prints how to delete them.

Each step prints what it did and how long it took; the exit status is 0 only if every step passed.
"""

from __future__ import annotations

import argparse
import base64
import io
import sys
import tarfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cli.client import ApiError, Client, follow_run  # noqa: E402
from shared.domain.vocabulary import RunStatus, Trigger  # noqa: E402

REPOSITORY = "https://github.com/Azure-Samples/acr-build-helloworld-node.git"


class SmokeFailed(Exception):
    pass


def archive(files: dict[str, str]) -> str:
    """A build context of these files as the API takes it: base64 of a .tar.gz."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
            tar.addfile(info, io.BytesIO(data))
    return base64.b64encode(buffer.getvalue()).decode("ascii")


class Smoke:
    def __init__(self, client: Client, args: argparse.Namespace):
        self.client = client
        self.args = args
        self.name = f"smoke-{uuid.uuid4().hex[:8]}"
        self.started = time.monotonic()

    def step(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.0f}s] {text}", flush=True)

    def finish(self, run_id: str, what: str) -> dict:
        """Follow a run to its end (its log to stdout when --verbose); SmokeFailed unless it Succeeded."""
        out = sys.stdout if self.args.verbose else io.StringIO()
        run = follow_run(self.client, run_id, out=out, timeout=self.args.timeout)
        if run.get("status") != RunStatus.SUCCEEDED:
            tail = self.client.read_log(run_id)[0].decode("utf-8", errors="replace").splitlines()[-25:]
            raise SmokeFailed(f"{what}: run {run_id} ended {run.get('status')}: {run.get('reason')}\n"
                              + "\n".join(f"    {line}" for line in tail))
        self.step(f"{what}: run {run_id} Succeeded, {run.get('output_digest') or 'no digest reported'}")
        return run

    def quick_build(self, image: str, files: dict[str, str], what: str) -> dict:
        run = self.client.quick_build({"images": [image], "dockerfile": "Dockerfile",
                                       "context": archive(files)})
        self.step(f"{what}: queued quick build {run['run_id']} of {image}")
        return self.finish(run["run_id"], what)

    def run(self) -> None:
        args = self.args
        self.client.request("GET", "openapi.json")  # reachable, and the key is accepted
        self.step(f"{self.client.url} answers; names start with {self.name}")

        # 1. a quick build through ACR; it also tells where images go
        probe = self.quick_build(f"{self.name}/probe:1", {
            "Dockerfile": "FROM scratch\nCOPY probe.txt /probe.txt\n", "probe.txt": self.name,
        }, "1. quick build")
        login_server = probe["output_images"][0].split("/", 1)[0]
        self.step(f"   the registry is {login_server}")

        # 2. a task on a public git repository
        prefix = f"{login_server}/{self.name}"
        task = self.client.create_task({
            "name": self.name, "images": [f"{self.name}/app:{{{{.Run.ID}}}}"], "context": args.repository,
            "dockerfile": args.file, "build_args": {args.registry_arg: prefix},
            **({"branch": args.branch} if args.branch else {}),
        })
        bases = [d["image"] for d in task.get("dependencies", []) if d.get("runtime")]
        ours = [b for b in bases if b.startswith(prefix + "/")]
        if not ours:
            raise SmokeFailed(f"2. task: the Dockerfile's runtime bases {bases} are not under {prefix}/; "
                              f"is {args.registry_arg} the ARG of its FROM?")
        base = ours[0]
        self.step(f"2. task {self.name} created on {args.repository}; it is built FROM {base}")

        # 3. its base, built from the upstream image
        base_name = base.split("/", 1)[1]
        self.quick_build(base_name, {"Dockerfile": f"FROM {args.upstream}\nENV SMOKE_VERSION=1\n"},
                         "3. base")

        # 4. a manual run of the task
        manual = self.client.run_task(self.name)
        self.step(f"4. task run: queued {manual['run_id']}")
        self.finish(manual["run_id"], "4. task run")
        before = {r["run_id"] for r in self.client.list_runs(top=50, task=self.name)["runs"]}

        # 5. a new base version, and the automatic run it must cause
        self.quick_build(base_name, {"Dockerfile": f"FROM {args.upstream}\nENV SMOKE_VERSION=2\n"},
                         "5. base update")
        deadline = time.monotonic() + args.timeout
        while True:
            runs = self.client.list_runs(top=50, task=self.name)["runs"]
            automatic = [r for r in runs
                         if r["run_id"] not in before and r.get("trigger") == Trigger.IMAGE_UPDATE]
            if automatic:
                break
            if time.monotonic() > deadline:
                decisions = self.client.decisions(top=10, image=base)
                raise SmokeFailed(f"5. no Image Update run of {self.name} within {args.timeout:.0f} s of the "
                                  f"base push; decisions about {base}: {decisions}")
            time.sleep(5)
        run = automatic[-1]
        self.step(f"5. the base push caused run {run['run_id']} ({run.get('cause') or 'no cause recorded'})")
        self.finish(run["run_id"], "5. automatic run")

    def clean(self) -> None:
        if self.args.keep:
            self.step(f"kept task {self.name}")
        else:
            try:
                self.client.delete_task(self.name)
                self.step(f"deleted task {self.name}")
            except ApiError as exc:
                self.step(f"could not delete task {self.name}: {exc}")
        print(f"The images stay in the registry; delete them with\n"
              f"  for r in $(az acr repository list -n <registry> -o tsv | grep '^{self.name}/'); do "
              f"az acr repository delete -n <registry> --repository $r --yes; done")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="the deployment (default: $BASETRIGGER_URL)")
    parser.add_argument("--key", help="a function key (default: $BASETRIGGER_KEY)")
    parser.add_argument("--repository", default=REPOSITORY,
                        help=f"a public git repository (default: {REPOSITORY})")
    parser.add_argument("--branch", default=None, help="its branch (default: the repository's default)")
    parser.add_argument("--file", default="Dockerfile-app",
                        help="the Dockerfile in it (default: Dockerfile-app)")
    parser.add_argument("--registry-arg", default="REGISTRY_NAME",
                        help="the build arg its FROM starts with (default: REGISTRY_NAME)")
    parser.add_argument("--upstream", default="docker.io/library/node:18-alpine",
                        help="what the smoke base is built FROM; it must have npm (default: node:18-alpine)")
    parser.add_argument("--timeout", type=float, default=1200,
                        help="seconds each run may take (default: 1200)")
    parser.add_argument("--keep", action="store_true", help="keep the task afterwards")
    parser.add_argument("--verbose", "-v", action="store_true", help="print the runs' logs")
    args = parser.parse_args(argv)
    try:
        client = Client.from_args(args)
    except ApiError as exc:
        print(f"smoke-azure: {exc}", file=sys.stderr)
        return 2
    client.timeout = max(client.timeout, 120.0)
    smoke = Smoke(client, args)
    try:
        smoke.run()
    except (SmokeFailed, ApiError) as exc:
        print(f"smoke-azure: FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        smoke.clean()
    print(f"smoke-azure: every step passed in {time.monotonic() - smoke.started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
