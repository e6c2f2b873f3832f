#!/usr/bin/env python3
"""The ACR Tasks base-image tutorial on the local stack, with the basetrigger CLI (`make demo`).

    python3 scripts/demo.py            # after `python3 scripts/stack.py up` (make demo does both)

Every CLI command is printed before it runs, as the user would type it, and each step shows how
long it took. The steps (docs/tutorial.md explains each one and what it prints):

  1. quick-build the base image  baseimages/node:9-alpine  (NODE_VERSION 9.11.2)
  2. create the task taskhelloworld (helloworld:{{.Run.ID}}, --arg REGISTRY_NAME=$REGISTRY)
  3. run it; 4. show its page; 5. list the runs
  6. bump NODE_VERSION to 9.11.2a and quick-build the base again
  7. wait for the automatic "Image Update" run of taskhelloworld; list the runs
  8. run the new app image and show its page with 9.11.2a

The example is copied to a temporary folder (busybox added, the bump made there): the committed
examples/helloworld is never edited. A taskhelloworld left by an earlier demo is deleted first, so
the demo can be run again. There is no docker engine here: the app image is run with buildah
(`buildah from`, then its command under `buildah run --isolation chroot`, serving on a free port).
Any failed step stops the demo with the reason and a non-zero exit status.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import types
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parent.parent
EXAMPLE = PROJECT / "examples" / "helloworld"
BUSYBOX = Path("/bin/busybox")
TASK = "taskhelloworld"
BASE_IMAGE = "baseimages/node:9-alpine"
OLD_VERSION, NEW_VERSION = "9.11.2", "9.11.2a"
AUTO_RUN_TIMEOUT = 300.0

sys.path.insert(0, str(PROJECT))

from cli.client import ApiError, Client, Progress  # noqa: E402
from cli.output import format_duration  # noqa: E402
from shared.domain.vocabulary import TERMINAL, RunStatus, Trigger  # noqa: E402


class DemoError(RuntimeError):
    pass


def _load_stack() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("basetrigger_stack", PROJECT / "scripts" / "stack.py")
    if spec is None or spec.loader is None:
        raise DemoError(f"cannot load {PROJECT / 'scripts' / 'stack.py'}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------------------------------
# Printing and running
# --------------------------------------------------------------------------------------------------

BOLD, DIM, GREEN, RED, RESET = ("\033[1m", "\033[2m", "\033[32m", "\033[31m", "\033[0m") \
    if sys.stdout.isatty() else ("", "", "", "", "")


def say(text: str = "") -> None:
    print(text, flush=True)


class Steps:
    def __init__(self, total: int):
        self.total = total
        self.number = 0
        self.started = time.monotonic()

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[None]:
        self.number += 1
        say(f"\n{BOLD}== {self.number}/{self.total} {title}{RESET}")
        begin = time.monotonic()
        yield
        say(f"{DIM}-- step {self.number} took {time.monotonic() - begin:.1f}s{RESET}")

    def elapsed(self) -> float:
        return time.monotonic() - self.started


class Demo:
    def __init__(self, env: dict[str, str], workdir: Path):
        self.env = env
        self.workdir = workdir
        self.registry = env["REGISTRY"]
        self.cert_dir = env.get("REGISTRY_CERT_DIR")
        self.client = Client(env["BASETRIGGER_URL"], env.get("BASETRIGGER_KEY"))
        self.cli_env = dict(env, PYTHONPATH=os.pathsep.join(filter(None, [str(PROJECT),
                                                                          env.get("PYTHONPATH")])))

    # ---- the CLI, shown as the user types it -----------------------------------------------
    def basetrigger(self, *args: str, cwd: Path | None = None) -> None:
        say(f"{BOLD}$ basetrigger {shlex.join(args)}{RESET}")
        code = subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=cwd or PROJECT,
                              env=self.cli_env).returncode
        if code != 0:
            raise DemoError(f"`basetrigger {shlex.join(args)}` exited with {code} (its reason is above)")

    # ---- buildah, to "docker run" an image ---------------------------------------------------
    def buildah(self, *args: str, show: bool = True) -> str:
        if show:
            say(f"{BOLD}$ buildah {shlex.join(args)}{RESET}")
        argv = ["buildah", "--storage-driver", "vfs", *args]
        result = subprocess.run(argv, capture_output=True, text=True)
        if result.returncode != 0:
            detail = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:] or ["no output"]
            raise DemoError(f"`buildah {args[0]}` exited with {result.returncode}: {detail[0]}")
        return result.stdout

    def _tls(self) -> list[str]:
        return ["--cert-dir", self.cert_dir] if self.cert_dir else []

    def show_page(self, image: str, version: str) -> str:
        """Run `image` (its command, on a free port) and print the page it serves."""
        container = f"demo-helloworld-{os.getpid()}-{int(time.time())}"
        self.buildah("from", "--name", container, *self._tls(), "--pull-always", "--quiet",
                     f"docker://{image}")
        server = None
        try:
            config = json.loads(self.buildah("inspect", "--type", "container", container, show=False))
            oci = config.get("OCIv1", {}).get("config", {})
            command = (oci.get("Entrypoint") or []) + (oci.get("Cmd") or [])
            if not command:
                raise DemoError(f"{image} has no command to run")
            port = _free_port()
            argv = ["run", "--isolation", "chroot", "--env", f"PORT={port}", container, "--", *command]
            say(f"{BOLD}$ buildah {shlex.join(argv)} &{RESET}")
            say(f"{DIM}  (in place of: docker run -d -p {port}:80 {image}){RESET}")
            server = subprocess.Popen(["buildah", "--storage-driver", "vfs", *argv],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            url = f"http://127.0.0.1:{port}/"
            say(f"{BOLD}$ curl {url}{RESET}")
            page = _fetch(url, server)
            say(page.rstrip())
            if f"Node version: {version}<" not in page:
                raise DemoError(f"the page of {image} does not show Node version {version}")
            say(f"{GREEN}the page shows Node version {version}{RESET}")
            return page
        finally:
            if server is not None and server.poll() is None:
                server.terminate()
                try:
                    server.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()
            with contextlib.suppress(DemoError):
                self.buildah("rm", container, show=False)

    # ---- API look-ups the demo needs (the same calls the CLI makes) -------------------------
    def newest_run(self, task: str) -> dict[str, Any]:
        runs: list[dict[str, Any]] = self.client.list_runs(top=1, task=task)["runs"]
        if not runs:
            raise DemoError(f"the task {task} has no run")
        return runs[0]

    def wait_for_image_update(self, known: set[str]) -> dict[str, Any]:
        """Poll the task's runs until a new Image Update run appears and ends."""
        progress = Progress(sys.stderr, every=10.0)
        begin = time.monotonic()
        run: dict[str, Any] | None = None
        while True:
            waited = int(time.monotonic() - begin)
            runs: list[dict[str, Any]] = self.client.list_runs(top=10, task=TASK)["runs"]
            fresh = [r for r in runs if r["run_id"] not in known and r.get("trigger") == Trigger.IMAGE_UPDATE]
            if fresh:
                run = fresh[-1] if run is None else next((r for r in fresh if r["run_id"] == run["run_id"]),
                                                         fresh[-1])
                if run["status"] in TERMINAL:
                    progress.clear()
                    return run
                progress.show(f"waiting for the Image Update run of {TASK}… {waited}s "
                              f"(run {run['run_id']} {run['status']})")
            else:
                progress.show(f"waiting for the Image Update run of {TASK}… {waited}s")
            if waited > AUTO_RUN_TIMEOUT:
                progress.clear()
                raise DemoError(f"no Image Update run of {TASK} ended within {AUTO_RUN_TIMEOUT:.0f}s"
                                + self._why_not())
            time.sleep(1.0)

    def _why_not(self) -> str:
        with contextlib.suppress(ApiError, KeyError):
            found = self.client.decisions(top=3, image=f"{self.registry}/{BASE_IMAGE}")
            if found:
                return "; the last decisions on the base image: " + "; ".join(
                    f"{d.get('outcome')}: {d.get('reason')}" for d in found)
        return ""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _fetch(url: str, server: subprocess.Popen[str], timeout: float = 20.0) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    while True:
        try:
            with opener.open(url, timeout=2) as response:
                page: bytes = response.read()
                return page.decode("utf-8", errors="replace")
        except OSError as exc:
            if server.poll() is not None:
                detail = (server.stderr.read() if server.stderr else "").strip().splitlines()[-1:]
                raise DemoError(f"the app exited with {server.returncode} before serving its page"
                                + (f": {detail[0]}" if detail else "")) from None
            if time.monotonic() > deadline:
                raise DemoError(f"the app did not answer on {url} within {timeout:.0f}s: {exc}") from None
            time.sleep(0.3)


# --------------------------------------------------------------------------------------------------
# The tutorial
# --------------------------------------------------------------------------------------------------


def bump_version(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    old_line = f"ENV NODE_VERSION {OLD_VERSION}"
    if old_line not in text:
        raise DemoError(f"{dockerfile.name} has no line {old_line!r}")
    dockerfile.write_text(text.replace(old_line, f"ENV NODE_VERSION {NEW_VERSION}"))
    say(f"{BOLD}$ sed -i 's/^ENV NODE_VERSION {OLD_VERSION}$/ENV NODE_VERSION {NEW_VERSION}/' "
        f"{dockerfile.name}{RESET}")
    say(f"-ENV NODE_VERSION {OLD_VERSION}\n+ENV NODE_VERSION {NEW_VERSION}")


def tutorial(demo: Demo) -> None:
    steps = Steps(total=9)
    context = demo.workdir / "helloworld"
    build_base = ["build", "--image", BASE_IMAGE, "--file", "Dockerfile-base", "."]

    with steps.step(f"Prepare a copy of examples/helloworld in {demo.workdir}"):
        shutil.copytree(EXAMPLE, context, ignore=shutil.ignore_patterns("busybox"))
        if not BUSYBOX.is_file():
            raise DemoError(f"{BUSYBOX} is missing: install busybox-static (`make install`)")
        shutil.copy2(BUSYBOX, context / "busybox")
        say(f"$ cp -r {EXAMPLE.relative_to(PROJECT)} {context} && cp {BUSYBOX} {context}/busybox")
        try:
            demo.client.get_task(TASK)
        except ApiError as exc:
            if exc.status != 404:
                raise
            say(f"no {TASK} yet")
        else:
            say(f"{TASK} is left from an earlier demo: deleting it")
            demo.basetrigger("task", "delete", "--name", TASK, "--yes")

    with steps.step("Quick-build the base image (az acr build)"):
        demo.basetrigger(*build_base, cwd=context)

    with steps.step(f"Create the task {TASK} (az acr task create)"):
        demo.basetrigger("task", "create", "--name", TASK, "--image", "helloworld:{{.Run.ID}}",
                         "--arg", f"REGISTRY_NAME={demo.registry}", "--context", str(EXAMPLE),
                         "--file", "Dockerfile-app", "--output", "table")

    with steps.step(f"Run {TASK} once, so its base image is known (az acr task run)"):
        demo.basetrigger("task", "run", "--name", TASK)
        first = demo.newest_run(TASK)
        if first["status"] != RunStatus.SUCCEEDED:
            raise DemoError(f"run {first['run_id']} {first['status']}: {first.get('reason')}")

    with steps.step(f"Run the app image {first['output_images'][0]} (docker run)"):
        demo.show_page(first["output_images"][0], OLD_VERSION)

    with steps.step("List the runs (az acr task list-runs --output table)"):
        demo.basetrigger("task", "list-runs", "--output", "table")

    known = {r["run_id"] for r in demo.client.list_runs(top=50, task=TASK)["runs"]}
    with steps.step(f"Patch the framework: NODE_VERSION {NEW_VERSION}, quick-build the base again"):
        bump_version(context / "Dockerfile-base")
        demo.basetrigger(*build_base, cwd=context)

    with steps.step(f"Wait for {TASK} to run by itself (trigger Image Update)"):
        auto = demo.wait_for_image_update(known)
        say(f"run {auto['run_id']} of {TASK}: {auto['status']} after "
            f"{format_duration(auto.get('duration_seconds'))}, cause: {auto.get('cause') or 'a base push'}")
        if auto["status"] != RunStatus.SUCCEEDED:
            raise DemoError(f"the Image Update run {auto['run_id']} {auto['status']}: {auto.get('reason')}")
        demo.basetrigger("task", "list-runs", "--output", "table")

    with steps.step(f"Run the rebuilt app image {auto['output_images'][0]}"):
        demo.show_page(auto["output_images"][0], NEW_VERSION)

    say(f"\n{GREEN}{BOLD}The app image was rebuilt on the patched base without anyone touching it "
        f"({auto['output_images'][0]} shows {NEW_VERSION}). Demo done in {steps.elapsed():.0f}s.{RESET}")


def main() -> int:
    stack = _load_stack()
    env = dict(os.environ)
    env.update(stack.stack_env())
    if not env.get("BASETRIGGER_KEY"):
        print("demo: the stack has no function key yet: start it first (`make up`)", file=sys.stderr)
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="basetrigger-demo-"))
    try:
        tutorial(Demo(env, workdir))
    except (DemoError, ApiError) as exc:
        print(f"\n{RED}demo failed: {exc}{RESET}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ndemo interrupted", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
