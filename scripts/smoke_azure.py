#!/usr/bin/env python3
"""The first thing to run after `azd up`: the whole cloud path, end to end, on a real deployment.

    eval "$(azd env get-values)"        # the deployment's ids, for the Event Grid check
    export SMOKE_CREDENTIAL_USERNAME=<Docker Hub user> SMOKE_CREDENTIAL_PASSWORD=<read-only token>
    make smoke-azure BASETRIGGER_URL=https://<app host> BASETRIGGER_KEY=<function key>

Not run in CI (it needs a deployment, and ACR runs cost money and minutes). With a unique name
`smoke-<id>`, each step prints what it proves; the exit status is 0 only if every step passed
(1: a step failed, with the reason; 2: the smoke test was not given what it needs).

 1. reachable: the URL answers and the function key is accepted.
 2. event subscription (`az`, before anything waits on it): this environment's subscription
    `basetrigger-<environment>` exists on the registry's system topic, is provisioned, takes
    `Microsoft.ContainerRegistry.ImagePushed` and delivers to this app's `eventgrid_image_pushed`.
 3. quick build (`FROM scratch`): the custom role's upload, scheduleRun, log and push actions; the
    run's output names the registry's login server.
 4. cancel: a slow quick build canceled while its ACR run builds ends Canceled *in ACR*, which proves
    the role's `runs/cancel/action` (a refused cancel fails the step).
 5. task: a task on a public git repository (the app clones it and reads its Dockerfile), created
    with its base image trigger off, a secret build arg and a registry credential.
 6. managed-identity read: the task's base is quick-built, the trigger turned on; the app reads the
    base's manifest with its managed identity and records its digest. No digest = no AcrPull: fails.
 7. first push: Event Grid delivered the base's first push and it added no run of the task.
 8. manual run: ACR clones the repository, signs in with the task's registry credential and gets
    the secret build arg; the run succeeds.
 9. automatic run: a new base version causes an `Image Update` run (Event Grid -> dispatch -> queue
    -> worker -> ACR), which succeeds.
10. secrets: neither the secret build arg nor the credential's password appeared in any answer or
    log the smoke test read (every answer is checked as it arrives; the values are never printed).

The task is deleted afterwards (unless --keep); the images stay under `smoke-<id>/` in the registry
and the script prints how to delete them. The credential's password is taken from the environment
only (a command line is visible to other processes); `--no-credential` skips it and says so.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import re
import sys
import tarfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "infra" / "hooks"))

from preprovision import AzError, az  # noqa: E402  (infra/hooks: the hooks' own `az` runner)

from cli.client import ApiError, Client, follow_run  # noqa: E402
from shared.domain.vocabulary import TERMINAL, RunStatus, Trigger  # noqa: E402

REPOSITORY = "https://github.com/Azure-Samples/acr-build-helloworld-node.git"
EVENT_FUNCTION = "eventgrid_image_pushed"
IMAGE_PUSHED = "Microsoft.ContainerRegistry.ImagePushed"
# The builder's log lines (shared/adapters/builders/acr.py) that name the ACR run.
SCHEDULED = re.compile(r"^(?:ACR run (\S+) scheduled on |following ACR run (\S+), )", re.M)
MAY_STILL_PUSH = "may still push"
# What the Event Grid check reads from the azd environment (`eval "$(azd env get-values)"`).
DEPLOYMENT_ENV = ("AZURE_SUBSCRIPTION_ID", "ACR_RESOURCE_GROUP", "ACR_NAME", "AZURE_ENV_NAME",
                  "AZURE_FUNCTION_APP_ID")

AzRunner = Callable[..., object]


class SmokeFailed(Exception):
    pass


class NotGiven(Exception):
    """The smoke test lacks an input (exit status 2): nothing was started."""


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


class WatchedClient(Client):
    """The API client, checking every answer it reads (JSON, logs, error messages) for the secrets
    the smoke test gave the app. A secret found is recorded by where it was seen, never printed."""

    def __init__(self, url: str, key: str | None, secrets: list[str], **kwargs: Any):
        super().__init__(url, key, **kwargs)
        # As sent and as JSON escapes them: an answer holds one or the other.
        self._secrets = [form for s in secrets if s for form in {s, json.dumps(s)[1:-1]}]
        self.answers = 0
        self.leaks: list[str] = []

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        where = f"{method} /api/{path.lstrip('/')}"
        try:
            response = super().request(method, path, **kwargs)
        except ApiError as exc:
            message = str(exc)
            if self._seen(message.encode(), f"the error of {where}"):
                for secret in self._secrets:
                    message = message.replace(secret, "***")
                raise ApiError(message, exc.status, exc.code) from None
            raise
        self.answers += 1
        self._seen(response.content, where)
        return response

    def _seen(self, data: bytes, where: str) -> bool:
        if any(secret.encode() in data for secret in self._secrets):
            self.leaks.append(where)
            return True
        return False


@dataclass(frozen=True)
class Deployment:
    """Where this environment's Event Grid subscription is (the azd environment's values)."""

    subscription: str
    registry_group: str
    registry: str
    environment: str
    function_app_id: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Deployment:
        missing = [name for name in DEPLOYMENT_ENV if not env.get(name)]
        if missing:
            raise NotGiven(f"{', '.join(missing)} not set: run `eval \"$(azd env get-values)\"` in the "
                           "azd project first (the Event Grid check needs the deployment's ids)")
        return cls(*(env[name] for name in DEPLOYMENT_ENV))

    @property
    def registry_id(self) -> str:
        return (f"/subscriptions/{self.subscription}/resourceGroups/{self.registry_group}/providers/"
                f"Microsoft.ContainerRegistry/registries/{self.registry}")

    @property
    def subscription_name(self) -> str:
        return f"basetrigger-{self.environment}"[:64]  # as infra/registry.bicep names it


@dataclass(frozen=True)
class Credential:
    login_server: str
    username: str
    password: str

    @classmethod
    def from_env(cls, env: Mapping[str, str], skip: bool) -> Credential | None:
        if skip:
            return None
        username, password = env.get("SMOKE_CREDENTIAL_USERNAME"), env.get("SMOKE_CREDENTIAL_PASSWORD")
        if not (username and password):
            raise NotGiven("SMOKE_CREDENTIAL_USERNAME and SMOKE_CREDENTIAL_PASSWORD are not set: give a "
                           "registry credential the task's run signs in with (for example a read-only "
                           "Docker Hub token; SMOKE_CREDENTIAL_SERVER, default docker.io), or pass "
                           "--no-credential to leave that step out")
        return cls(env.get("SMOKE_CREDENTIAL_SERVER") or "docker.io", username, password)


class Smoke:
    def __init__(self, client: WatchedClient, args: argparse.Namespace, deployment: Deployment,
                 credential: Credential | None, secret_arg: str, *, az_runner: AzRunner = az,
                 sleep: Callable[[float], None] = time.sleep, poll_seconds: float = 5.0):
        self.client = client
        self.args = args
        self.deployment = deployment
        self.credential = credential
        self.secret_arg = secret_arg
        self.az = az_runner
        self.sleep = sleep
        self.poll_seconds = poll_seconds
        self.name = f"smoke-{uuid.uuid4().hex[:8]}"
        self.started = time.monotonic()
        self.task_created = False

    # ---- output ----------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.0f}s] {text}", flush=True)

    def proved(self, step: str, proof: str) -> None:
        self.say(f"{step}: passed; proves {proof}")

    # ---- the steps, in order -------------------------------------------------------------------
    def run(self) -> None:
        self.reachable()
        self.event_subscription()
        login_server = self.quick_build_probe()
        self.cancel()
        base = self.task(login_server)
        first_digest = self.identity_read(base)
        self.first_push(base, first_digest)
        self.manual_run()
        self.automatic_run(base)
        self.secrets()

    def reachable(self) -> None:
        self.client.request("GET", "openapi.json")
        self.proved("1. reachable", f"{self.client.url} answers and accepts the function key")

    def event_subscription(self) -> None:
        """Checked before anything waits for an event: a missing or misdirected subscription fails
        here, with its reason, not as a timeout at step 7."""
        d = self.deployment
        try:
            topics = self.az("eventgrid", "system-topic", "list", "--subscription", d.subscription,
                             "-g", d.registry_group)
            topic = next((t for t in (topics if isinstance(topics, list) else []) if isinstance(t, dict)
                          and str(t.get("source", "")).lower() == d.registry_id.lower()), None)
            if topic is None:
                raise SmokeFailed(f"2. event subscription: {d.registry} has no Event Grid system topic in "
                                  f"{d.registry_group}: run `azd hooks run postdeploy`")
            found = self.az("eventgrid", "system-topic", "event-subscription", "show", "--subscription",
                            d.subscription, "-g", d.registry_group, "--system-topic-name",
                            str(topic["name"]), "-n", d.subscription_name)
        except AzError as exc:
            if exc.not_found:
                raise SmokeFailed(f"2. event subscription: {d.subscription_name} does not exist on the "
                                  f"registry's system topic: run `azd hooks run postdeploy`") from None
            raise SmokeFailed(f"2. event subscription: az failed: {exc}") from None
        subscription = found if isinstance(found, dict) else {}
        destination = subscription.get("destination") or {}
        target = destination.get("resourceId") or (destination.get("properties") or {}).get("resourceId")
        wanted = f"{d.function_app_id}/functions/{EVENT_FUNCTION}"
        events = (subscription.get("filter") or {}).get("includedEventTypes") or []
        problems = []
        if subscription.get("provisioningState") != "Succeeded":
            problems.append(f"its provisioning state is {subscription.get('provisioningState')}")
        if destination.get("endpointType") != "AzureFunction" or str(target or "").lower() != wanted.lower():
            problems.append(f"it delivers to {destination.get('endpointType')} {target}, not {wanted}")
        if events and IMAGE_PUSHED not in events:
            problems.append(f"it filters {events}, without {IMAGE_PUSHED}")
        if problems:
            raise SmokeFailed(f"2. event subscription {d.subscription_name}: " + "; ".join(problems))
        self.proved("2. event subscription", f"{d.subscription_name} on system topic {topic['name']} "
                    f"delivers {IMAGE_PUSHED} to {EVENT_FUNCTION} of this app")

    def quick_build_probe(self) -> str:
        probe = self.quick_build(f"{self.name}/probe:1", {
            "Dockerfile": "FROM scratch\nCOPY probe.txt /probe.txt\n", "probe.txt": self.name,
        }, "3. quick build")
        login_server = str(probe["output_images"][0]).split("/", 1)[0]
        self.proved("3. quick build", f"the app may upload a context, schedule an ACR run, read its log "
                    f"and have it push (to {login_server})")
        return login_server

    def cancel(self) -> None:
        files = {"Dockerfile": f"FROM {self.args.upstream}\nRUN sleep 900\n"}
        run = self.client.quick_build({"images": [f"{self.name}/cancel:1"], "dockerfile": "Dockerfile",
                                       "context": archive(files)})
        run_id = run["run_id"]
        found = self.wait_for_log(run_id, SCHEDULED, "its ACR run to be scheduled", until_finished=True)
        acr_run = found.group(1) or found.group(2)
        self.client.cancel_run(run_id)
        self.say(f"4. cancel: canceled run {run_id} while ACR run {acr_run} builds")
        # The builder writes "ACR run <id>: Canceled" once ACR reports it, or why it may still push.
        stopped = re.compile(rf"^ACR run {re.escape(acr_run)}: (\w+)|{MAY_STILL_PUSH}", re.M)
        ended = self.wait_for_log(run_id, stopped, "ACR to report the run stopped")
        record = self.client.get_run(run_id)
        if MAY_STILL_PUSH in ended.group(0) or MAY_STILL_PUSH in str(record.get("reason")):
            raise SmokeFailed(f"4. cancel: ACR did not cancel run {acr_run}: {record.get('reason')} "
                              "(does the custom role grant runs/cancel/action?)")
        if ended.group(1) != "Canceled" or record.get("status") != RunStatus.CANCELED:
            raise SmokeFailed(f"4. cancel: ACR run {acr_run} ended {ended.group(1)}, run {run_id} is "
                              f"{record.get('status')}: expected both Canceled")
        self.proved("4. cancel", f"the app may cancel an ACR run (runs/cancel/action): {acr_run} Canceled")

    def task(self, login_server: str) -> str:
        args = self.args
        prefix = f"{login_server}/{self.name}"
        task = self.client.create_task({
            "name": self.name, "images": [f"{self.name}/app:{{{{.Run.ID}}}}"], "context": args.repository,
            "dockerfile": args.file, "build_args": {args.registry_arg: prefix},
            "secret_args": {"SMOKE_SECRET": self.secret_arg},
            # Off until its base exists: the base's first push is step 7's to judge.
            "base_image_trigger_enabled": False,
            **({"branch": args.branch} if args.branch else {}),
        })
        self.task_created = True
        bases: list[str] = [d["image"] for d in task.get("dependencies", []) if d.get("runtime")]
        ours = [b for b in bases if b.startswith(prefix + "/")]
        if not ours:
            raise SmokeFailed(f"5. task: the Dockerfile's runtime bases {bases} are not under {prefix}/; "
                              f"is {args.registry_arg} the ARG of its FROM?")
        if self.credential is not None:
            c = self.credential
            self.client.request("POST", f"tasks/{self.name}/credentials", body={
                "login_server": c.login_server, "username": c.username, "password": c.password})
            with_credential = f", a registry credential for {c.login_server}"
        else:
            with_credential = " (no registry credential: --no-credential)"
        self.proved("5. task", f"the app cloned {args.repository} and read {args.file}: built FROM "
                    f"{ours[0]}; created with a secret build arg{with_credential}")
        return ours[0]

    def identity_read(self, base: str) -> str:
        base_name = base.split("/", 1)[1]
        first = {"Dockerfile": f"FROM {self.args.upstream}\nENV SMOKE_VERSION=1\n"}
        built = self.quick_build(base_name, first, "6. base")
        # Turning the trigger on reads the Dockerfile again and each base's digest, with the app's
        # managed identity (AcrPull); a refused read leaves the digest empty.
        task = self.client.update_task(self.name, {"base_image_trigger_enabled": True})
        digest = next((d.get("digest") for d in task.get("dependencies", []) if d.get("image") == base), None)
        if not digest:
            raise SmokeFailed(f"6. managed-identity read: the app could not read {base} with its managed "
                              "identity (the task records no digest for it): is AcrPull assigned to the "
                              "app's identity on the registry? (its host log says why)")
        pushed = built.get("output_digest")
        note = "" if digest == pushed else f" (the run reported {pushed})"
        self.proved("6. managed-identity read", f"the app read {base} with its managed identity (AcrPull): "
                    f"{digest}{note}")
        return str(built.get("output_digest") or digest)

    def first_push(self, base: str, digest: str) -> None:
        deadline = time.monotonic() + self.args.timeout
        while True:
            decisions = [d for d in self.client.decisions(top=20, image=base) if d.get("digest") == digest]
            if decisions:
                break
            if time.monotonic() > deadline:
                raise SmokeFailed(f"7. first push: no decision about the push of {base}@{digest} within "
                                  f"{self.args.timeout:.0f} s: Event Grid did not deliver it")
            self.sleep(self.poll_seconds)
        runs = self.client.list_runs(top=50, task=self.name)["runs"]
        if runs:
            raise SmokeFailed(f"7. first push: the base's first push added run(s) "
                              f"{', '.join(r['run_id'] for r in runs)} of {self.name}; decided: "
                              f"{decisions[0].get('outcome')} ({decisions[0].get('reason')})")
        self.proved("7. first push", f"Event Grid delivered the base's first push (decided "
                    f"{decisions[0].get('outcome')}) and it added no run")

    def manual_run(self) -> None:
        run = self.client.run_task(self.name)
        self.finish(run["run_id"], "8. manual run")
        credential = (f"signed in with the credential for {self.credential.login_server}, "
                      if self.credential else "")
        self.proved("8. manual run", f"ACR cloned the repository, {credential}got the secret build arg "
                    "and pushed")

    def automatic_run(self, base: str) -> None:
        before = {r["run_id"] for r in self.client.list_runs(top=50, task=self.name)["runs"]}
        base_name = base.split("/", 1)[1]
        self.quick_build(base_name, {"Dockerfile": f"FROM {self.args.upstream}\nENV SMOKE_VERSION=2\n"},
                         "9. base update")
        deadline = time.monotonic() + self.args.timeout
        while True:
            runs = self.client.list_runs(top=50, task=self.name)["runs"]
            automatic = [r for r in runs
                         if r["run_id"] not in before and r.get("trigger") == Trigger.IMAGE_UPDATE]
            if automatic:
                break
            if time.monotonic() > deadline:
                decisions = self.client.decisions(top=10, image=base)
                raise SmokeFailed(f"9. no Image Update run of {self.name} within {self.args.timeout:.0f} s "
                                  f"of the base push; decisions about {base}: {decisions}")
            self.sleep(self.poll_seconds)
        run = automatic[-1]
        self.finish(run["run_id"], "9. automatic run")
        self.proved("9. automatic run", f"the base push caused run {run['run_id']} "
                    f"({run.get('cause') or 'no cause recorded'}) and it succeeded")

    def secrets(self) -> None:
        if self.client.leaks:
            raise SmokeFailed("10. secrets: the secret build arg or the credential's password appeared in "
                              + "; ".join(sorted(set(self.client.leaks))))
        self.proved("10. secrets", f"neither secret appeared in the {self.client.answers} answers and logs "
                    "read")

    # ---- helpers ---------------------------------------------------------------------------------
    def finish(self, run_id: str, what: str) -> dict[str, Any]:
        """Follow a run to its end (its log to stdout when --verbose); SmokeFailed unless it Succeeded."""
        out = sys.stdout if self.args.verbose else io.StringIO()
        run = follow_run(self.client, run_id, out=out, timeout=self.args.timeout, sleep=self.sleep)
        if run.get("status") != RunStatus.SUCCEEDED:
            tail = self.client.read_log(run_id)[0].decode("utf-8", errors="replace").splitlines()[-25:]
            raise SmokeFailed(f"{what}: run {run_id} ended {run.get('status')}: {run.get('reason')}\n"
                              + "\n".join(f"    {line}" for line in tail))
        self.say(f"{what}: run {run_id} Succeeded, {run.get('output_digest') or 'no digest reported'}")
        return run

    def quick_build(self, image: str, files: dict[str, str], what: str) -> dict[str, Any]:
        run = self.client.quick_build({"images": [image], "dockerfile": "Dockerfile",
                                       "context": archive(files)})
        self.say(f"{what}: queued quick build {run['run_id']} of {image}")
        return self.finish(run["run_id"], what)

    def wait_for_log(self, run_id: str, pattern: re.Pattern[str], what: str,
                     until_finished: bool = False) -> re.Match[str]:
        """The first match of `pattern` in the run's log, read as it grows. With `until_finished`, a
        run that ends without it fails the step at once; else only the deadline does."""
        deadline = time.monotonic() + self.args.timeout
        text, offset = "", 0
        while True:
            data, offset, status = self.client.read_log(run_id, offset)
            text += data.decode("utf-8", errors="replace")
            found = pattern.search(text)
            if found:
                return found
            if (until_finished and status in TERMINAL) or time.monotonic() > deadline:
                tail = "\n".join(f"    {line}" for line in text.splitlines()[-15:])
                raise SmokeFailed(f"run {run_id} ({status}): gave up waiting for {what}\n{tail}")
            self.sleep(self.poll_seconds)

    def clean(self) -> None:
        if self.args.keep or not self.task_created:
            self.say(f"kept task {self.name}" if self.task_created else "no task to delete")
        else:
            try:
                self.client.delete_task(self.name)
                self.say(f"deleted task {self.name}")
            except ApiError as exc:
                self.say(f"could not delete task {self.name}: {exc}")
        print(f"The images stay in the registry; delete them with\n"
              f"  for r in $(az acr repository list -n <registry> -o tsv | grep '^{self.name}/'); do "
              f"az acr repository delete -n <registry> --repository $r --yes; done")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
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
                        help="seconds each run, or each wait for an event, may take (default: 1200)")
    parser.add_argument("--no-credential", action="store_true",
                        help="leave the registry credential out (that step is then not proven)")
    parser.add_argument("--keep", action="store_true", help="keep the task afterwards")
    parser.add_argument("--verbose", "-v", action="store_true", help="print the runs' logs")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, *, env: Mapping[str, str] | None = None,
         session: requests.Session | None = None, az_runner: AzRunner = az,
         sleep: Callable[[float], None] = time.sleep, poll_seconds: float = 5.0) -> int:
    """`env`, `session` (the HTTP API's), `az_runner` and `sleep` are for tests."""
    args = parse(argv)
    env = os.environ if env is None else env
    secret_arg = f"smoke-secret-{uuid.uuid4().hex}"
    try:
        deployment = Deployment.from_env(env)
        credential = Credential.from_env(env, args.no_credential)
        url, key = args.url or env.get("BASETRIGGER_URL"), args.key or env.get("BASETRIGGER_KEY")
        if not url:
            raise NotGiven("no deployment: pass --url or set BASETRIGGER_URL")
        secrets = [secret_arg] + ([credential.password] if credential else [])
        client = WatchedClient(url, key, secrets, session=session, timeout=120.0)
    except (NotGiven, ApiError) as exc:
        print(f"smoke-azure: {exc}", file=sys.stderr)
        return 2
    smoke = Smoke(client, args, deployment, credential, secret_arg, az_runner=az_runner, sleep=sleep,
                  poll_seconds=poll_seconds)
    try:
        smoke.run()
    except (SmokeFailed, ApiError) as exc:
        print(f"smoke-azure: FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        smoke.clean()
    skipped = " (registry credential left out: --no-credential)" if credential is None else ""
    print(f"smoke-azure: every step passed in {time.monotonic() - smoke.started:.0f} s{skipped}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
