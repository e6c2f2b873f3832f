"""scripts/smoke_azure.py's steps, driven against a fake basetrigger API and a fake `az`.

The smoke test cannot run here (it needs a deployment). What is tested is its judgement: the real
script, with the real API client, talks to `FakeBasetrigger` (a requests adapter answering as the
API does: runs, logs with the builder's lines, tasks, credentials, decisions) and to a stand-in for
`az` answering as `az eventgrid system-topic …` does. The deployment passes; each fault the smoke
test is there to find (no AcrPull, no or a misdirected event subscription, a refused cancel, a first
push that adds a run, a secret in a log) makes it exit non-zero with that reason, and a missing
input exits 2 before anything starts.
"""

from __future__ import annotations

import importlib.util
import io
import json
import re
import sys
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import requests
import urllib3

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("smoke_azure", ROOT / "scripts" / "smoke_azure.py")
smoke_azure = importlib.util.module_from_spec(spec)
sys.modules["smoke_azure"] = smoke_azure
spec.loader.exec_module(smoke_azure)
AzError = sys.modules["preprovision"].AzError

LOGIN = "contosoacr.azurecr.io"
SUB = "00000000-1111-2222-3333-444444444444"
APP_ID = f"/subscriptions/{SUB}/resourceGroups/rg-app/providers/Microsoft.Web/sites/func-basetrigger-x"
REGISTRY_ID = (f"/subscriptions/{SUB}/resourceGroups/rg-images/providers/"
               "Microsoft.ContainerRegistry/registries/contosoacr")
ENV = {"AZURE_SUBSCRIPTION_ID": SUB, "ACR_RESOURCE_GROUP": "rg-images", "ACR_NAME": "contosoacr",
       "AZURE_ENV_NAME": "prod", "AZURE_FUNCTION_APP_ID": APP_ID,
       "BASETRIGGER_URL": "https://func-basetrigger-x.azurewebsites.net", "BASETRIGGER_KEY": "fkey",
       "SMOKE_CREDENTIAL_USERNAME": "hubuser", "SMOKE_CREDENTIAL_PASSWORD": "dckr_pat_smoke-s3cr3t"}


def digest(n: int) -> str:
    return "sha256:" + f"{n:064x}"


class FakeBasetrigger:
    """The basetrigger HTTP API as the smoke test uses it, on a deployment that works, unless told
    otherwise: `acr_pull=False` (base reads with the identity fail), `cancel_refused` (the role
    lacks runs/cancel/action), `first_push_runs` (a task's base's first push queues a run),
    `echo_secret` (a run's log shows the secret build arg unmasked), `events=False` (Event Grid
    delivers nothing), `schedule_refused` (the role lacks scheduleRun/action), `no_rebuild` (a base
    change is decided without a run)."""

    def __init__(self, **faults):
        self.acr_pull = faults.get("acr_pull", True)
        self.cancel_refused = faults.get("cancel_refused", False)
        self.first_push_runs = faults.get("first_push_runs", False)
        self.echo_secret = faults.get("echo_secret", False)
        self.events = faults.get("events", True)
        self.schedule_refused = faults.get("schedule_refused", False)
        self.no_rebuild = faults.get("no_rebuild", False)
        self.runs: dict[str, dict] = {}
        self.logs: dict[str, str] = {}
        self.tasks: dict[str, dict] = {}
        self.secrets: dict[str, str] = {}
        self.credentials: dict[str, list[dict]] = {}
        self.decisions: list[dict] = []
        self.registry: dict[str, str] = {}  # image -> digest
        self.calls: list[tuple[str, str]] = []
        self.pushes = 0

    # -- the wire --------------------------------------------------------------------------------
    def handle(self, method: str, url: str, body: bytes) -> tuple[int, dict, bytes]:
        parts = urlsplit(url)
        path = unquote(parts.path).removeprefix("/api/")
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        data = json.loads(body) if body else {}
        self.calls.append((method, path))
        if path == "openapi.json":
            return self.json({"openapi": "3.0.3"})
        if method == "POST" and path == "builds":
            return self.json(self.quick_build(data), 202)
        if method == "GET" and path == "runs":
            runs = [r for r in self.runs.values() if r.get("task") == query.get("task")]
            return self.json({"runs": runs[::-1]})
        if match := re.fullmatch(r"runs/([^/]+)/log", path):
            log = self.logs[match[1]].encode()
            offset = int(query.get("offset", 0))
            return 200, {"x-log-offset": str(len(log)), "x-run-status": self.runs[match[1]]["status"],
                         "Content-Type": "text/plain"}, log[offset:]
        if match := re.fullmatch(r"runs/([^/]+)/cancel", path):
            return self.json(self.cancel(match[1]))
        if match := re.fullmatch(r"runs/([^/]+)", path):
            return self.json(self.runs[match[1]])
        if method == "POST" and path == "tasks":
            return self.json(self.create_task(data), 201)
        if match := re.fullmatch(r"tasks/([^/]+)/credentials", path):
            entry = {"login_server": data["login_server"], "username": data["username"],
                     "use_identity": False}
            self.credentials.setdefault(match[1], []).append(entry)
            self.secrets[match[1] + "/password"] = data["password"]
            return self.json({"task": match[1], "credentials": self.credentials[match[1]]})
        if match := re.fullmatch(r"tasks/([^/]+)/runs", path):
            return self.json(self.start(match[1], "Manual"), 202)
        if match := re.fullmatch(r"tasks/([^/]+)", path):
            name = match[1]
            if method == "PATCH":
                task = self.tasks[name]
                task["base_image_trigger"]["enabled"] = data["base_image_trigger_enabled"]
                for dep in task["dependencies"]:
                    dep["digest"] = self.registry.get(dep["image"]) if self.acr_pull else None
                return self.json(task)
            if method == "DELETE":
                self.tasks.pop(name)
                return 204, {}, b""
            return self.json(self.tasks[name])
        if method == "GET" and path == "decisions":
            return self.json({"decisions": [d for d in self.decisions if d["image"] == query.get("image")]})
        return self.json({"error": {"code": "NotFound", "message": f"no route {method} {path}"}}, 404)

    @staticmethod
    def json(payload, status=200):
        return status, {"Content-Type": "application/json"}, json.dumps(payload).encode()

    # -- what the app does -----------------------------------------------------------------------
    def new_run(self, trigger: str, images: list[str], task: str | None = None) -> dict:
        run_id = f"da{len(self.runs) + 1}"
        run = {"run_id": run_id, "status": "Succeeded", "trigger": trigger, "task": task, "reason": None,
               "output_images": [f"{LOGIN}/{i}" for i in images], "output_digest": None}
        self.runs[run_id] = run
        self.logs[run_id] = (f"run {run_id} (attempt 1): {trigger}\n"
                             f"ACR run cb{run_id[2:]} scheduled on contosoacr\n")
        return run

    def quick_build(self, data: dict) -> dict:
        run = self.new_run("Manual", data["images"])
        acr = "cb" + run["run_id"][2:]
        if data["images"][0].endswith("/cancel:1"):  # step 4's slow build: still building when canceled
            run["status"] = "Running"
            return run
        if self.schedule_refused:
            run["status"], run["reason"] = "Error", "(AuthorizationFailed) no scheduleRun/action"
            return run
        self.logs[run["run_id"]] += f"ACR run {acr}: Succeeded\n"
        self.push(run)
        return run

    def push(self, run: dict) -> None:
        """ACR pushed the run's image; Event Grid delivers the push and the app decides about it."""
        self.pushes += 1
        image = run["output_images"][0]
        run["output_digest"] = digest(self.pushes)
        first = image not in self.registry
        self.registry[image] = run["output_digest"]
        if not self.events:
            return
        outcome = "no-dependents"
        for name, task in self.tasks.items():
            dep = next((d for d in task["dependencies"] if d["image"] == image), None)
            if dep is None:
                continue
            if first and self.first_push_runs:  # the extra run step 7 is there to catch
                outcome = "queued"
                self.start(name, "Image Update")
            elif not task["base_image_trigger"]["enabled"]:
                outcome = "trigger-disabled"
            elif dep["digest"] == run["output_digest"] or self.no_rebuild:
                outcome = "digest-unchanged"
            else:
                outcome = "queued"
                self.start(name, "Image Update")
        self.decisions.append({"image": image, "digest": run["output_digest"], "outcome": outcome,
                               "reason": "canned", "tasks": []})

    def cancel(self, run_id: str) -> dict:
        run = self.runs[run_id]
        acr = "cb" + run_id[2:]
        run["status"], run["reason"] = "Canceled", "canceled by request"
        if self.cancel_refused:
            note = (f"canceling ACR run {acr} failed ((AuthorizationFailed) no runs/cancel/action): "
                    "it may still push its images")
            run["reason"] += f"; {note}"
            self.logs[run_id] += note + "\n"
        else:
            self.logs[run_id] += f"ACR run {acr}: Canceled\n"
        return run

    def create_task(self, data: dict) -> dict:
        prefix = data["build_args"]["REGISTRY_NAME"]
        self.secrets.update(data.get("secret_args", {}))
        task = {"name": data["name"], "images": data["images"], "context": data["context"],
                "secret_args": sorted(data.get("secret_args", {})),
                "base_image_trigger": {"enabled": data.get("base_image_trigger_enabled", True)},
                "dependencies": [{"image": f"{prefix}/baseimages/node:15-alpine", "digest": None,
                                  "runtime": True}]}
        self.tasks[data["name"]] = task
        return task

    def start(self, name: str, trigger: str) -> dict:
        run = self.new_run(trigger, ["app:1"], task=name)
        secret = self.secrets["SMOKE_SECRET"] if self.echo_secret else "***"
        self.logs[run["run_id"]] += (f"Step 3/5 : RUN echo {secret}\n"
                                     f"ACR run cb{run['run_id'][2:]}: Succeeded\n")
        run["output_digest"] = digest(900 + len(self.runs))
        return run


class Adapter(requests.adapters.BaseAdapter):
    def __init__(self, fake: FakeBasetrigger):
        super().__init__()
        self.fake = fake

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        body = request.body or b""
        status, headers, content = self.fake.handle(request.method, request.url,
                                                    body.encode() if isinstance(body, str) else body)
        raw = urllib3.HTTPResponse(body=io.BytesIO(content), headers=headers, status=status,
                                   preload_content=False, reason="canned")
        return requests.adapters.HTTPAdapter().build_response(request, raw)

    def close(self):
        pass


class FakeAz:
    """`az eventgrid system-topic list` and `… event-subscription show`, as the CLI answers them."""

    def __init__(self, subscription: dict | None = None, topic: bool = True):
        self.topic = topic
        self.subscription = subscription if subscription is not None else {
            "name": "basetrigger-prod", "provisioningState": "Succeeded",
            "destination": {"endpointType": "AzureFunction", "maxEventsPerBatch": 1,
                            "resourceId": f"{APP_ID}/functions/eventgrid_image_pushed"},
            "filter": {"includedEventTypes": ["Microsoft.ContainerRegistry.ImagePushed"]},
        }
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, *args: str) -> object:
        self.calls.append(args)
        if args[:3] == ("eventgrid", "system-topic", "list"):
            return [{"name": "contosoacr-events", "source": REGISTRY_ID}] if self.topic else []
        if args[:4] == ("eventgrid", "system-topic", "event-subscription", "show"):
            assert args[args.index("-n") + 1] == "basetrigger-prod"
            if not self.subscription:
                raise AzError("(ResourceNotFound) The event subscription was not found.", not_found=True)
            return self.subscription
        raise AssertionError(f"unexpected az {args}")


def smoke(fake: FakeBasetrigger, az: FakeAz | None = None, env: dict | None = None, *argv: str) -> int:
    session = requests.Session()
    session.trust_env = False
    session.mount("https://", Adapter(fake))
    return smoke_azure.main(["--timeout", "30", *argv], env=ENV if env is None else env, session=session,
                            az_runner=az or FakeAz(), sleep=lambda _: None, poll_seconds=0)


def test_a_working_deployment_passes_every_step_and_says_what_each_proves(capsys):
    fake = FakeBasetrigger()
    assert smoke(fake) == 0
    out = capsys.readouterr().out
    for step in ("1. reachable", "2. event subscription", "3. quick build", "4. cancel", "5. task",
                 "6. managed-identity read", "7. first push", "8. manual run", "9. automatic run",
                 "10. secrets"):
        assert f"{step}: passed; proves " in out, step
    assert "runs/cancel/action" in out and "AcrPull" in out
    assert "every step passed" in out
    assert not fake.tasks  # deleted afterwards
    assert [r["trigger"] for r in fake.runs.values() if r["task"]] == ["Manual", "Image Update"]
    assert "dckr_pat_smoke-s3cr3t" not in out and "smoke-secret-" not in out


def test_no_acr_pull_fails_the_managed_identity_step_with_the_reason(capsys):
    assert smoke(FakeBasetrigger(acr_pull=False)) == 1
    err = capsys.readouterr().err
    assert "FAILED: 6. managed-identity read" in err and "AcrPull" in err


def test_a_missing_event_subscription_fails_before_any_build(capsys):
    fake = FakeBasetrigger()
    assert smoke(fake, FakeAz(subscription={})) == 1
    assert "2. event subscription: basetrigger-prod does not exist" in capsys.readouterr().err
    assert ("POST", "builds") not in fake.calls


def test_a_registry_without_a_system_topic_fails_the_event_step(capsys):
    assert smoke(FakeBasetrigger(), FakeAz(topic=False)) == 1
    assert "has no Event Grid system topic" in capsys.readouterr().err


def test_a_subscription_pointing_at_another_app_fails_the_event_step(capsys):
    az = FakeAz()
    az.subscription["destination"]["resourceId"] = APP_ID + "-other/functions/eventgrid_image_pushed"
    fake = FakeBasetrigger()
    assert smoke(fake, az) == 1
    assert "it delivers to AzureFunction" in capsys.readouterr().err
    assert ("POST", "builds") not in fake.calls


def test_a_subscription_not_provisioned_fails_the_event_step(capsys):
    az = FakeAz()
    az.subscription["provisioningState"] = "Failed"
    assert smoke(FakeBasetrigger(), az) == 1
    assert "its provisioning state is Failed" in capsys.readouterr().err


def test_a_refused_cancel_fails_the_cancel_step_naming_the_action(capsys):
    assert smoke(FakeBasetrigger(cancel_refused=True)) == 1
    err = capsys.readouterr().err
    assert "FAILED: 4. cancel: ACR did not cancel run cb2" in err and "runs/cancel/action" in err


def test_a_first_push_that_adds_a_run_fails(capsys):
    assert smoke(FakeBasetrigger(first_push_runs=True)) == 1
    err = capsys.readouterr().err
    assert "FAILED: 7. first push: the base's first push added run(s) da4 of smoke-" in err
    assert "decided: queued" in err


def test_no_event_delivered_fails_the_first_push_step_with_the_reason(capsys, monkeypatch):
    clock = iter(range(0, 10**6, 10))
    monkeypatch.setattr(smoke_azure.time, "monotonic", lambda: next(clock))
    assert smoke(FakeBasetrigger(events=False)) == 1
    assert "7. first push: no decision about the push" in capsys.readouterr().err


def test_a_secret_in_a_log_fails_the_secrets_step_without_printing_it(capsys):
    assert smoke(FakeBasetrigger(echo_secret=True)) == 1
    out, err = capsys.readouterr()
    assert "FAILED: 10. secrets: the secret build arg or the credential's password appeared in " in err
    assert "GET /api/runs/da" in err and "/log" in err
    assert "smoke-secret-" not in out + err


def test_the_credential_is_sent_to_the_task_and_its_password_never_answered(capsys):
    fake = FakeBasetrigger()
    assert smoke(fake) == 0
    (name,) = fake.credentials
    assert fake.credentials[name] == [{"login_server": "docker.io", "username": "hubuser",
                                       "use_identity": False}]
    assert fake.secrets[f"{name}/password"] == "dckr_pat_smoke-s3cr3t"


def test_without_a_credential_it_stops_before_starting_unless_told_to_leave_it_out(capsys):
    env = {k: v for k, v in ENV.items() if not k.startswith("SMOKE_CREDENTIAL")}
    fake = FakeBasetrigger()
    assert smoke(fake, None, env) == 2
    assert "SMOKE_CREDENTIAL_PASSWORD" in capsys.readouterr().err and fake.calls == []
    assert smoke(fake, None, env, "--no-credential") == 0
    assert "registry credential left out" in capsys.readouterr().out


def test_without_the_deployment_ids_it_stops_before_starting(capsys):
    env = {k: v for k, v in ENV.items() if k != "AZURE_FUNCTION_APP_ID"}
    fake = FakeBasetrigger()
    assert smoke(fake, None, env) == 2
    assert "AZURE_FUNCTION_APP_ID not set" in capsys.readouterr().err and fake.calls == []


def test_a_refused_schedule_fails_the_quick_build_step_with_acr_s_reason(capsys):
    assert smoke(FakeBasetrigger(schedule_refused=True)) == 1
    assert "FAILED: 3. quick build: run da1 ended Error: (AuthorizationFailed) no scheduleRun/action" in (
        capsys.readouterr().err)


def test_a_base_change_without_a_rebuild_fails_the_automatic_run_step(capsys, monkeypatch):
    clock = iter(range(0, 10**6, 10))
    monkeypatch.setattr(smoke_azure.time, "monotonic", lambda: next(clock))
    assert smoke(FakeBasetrigger(no_rebuild=True)) == 1
    assert "9. no Image Update run of smoke-" in capsys.readouterr().err


def test_a_refused_key_fails_the_first_step(capsys):
    fake = FakeBasetrigger()
    original = fake.handle
    fake.handle = lambda method, url, body: ((401, {}, b"") if "openapi" in url
                                             else original(method, url, body))
    assert smoke(fake) == 1
    assert "the function key was refused (HTTP 401)" in capsys.readouterr().err
