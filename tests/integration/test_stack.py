"""The local stack (scripts/stack.py) against the real parts: Azurite, docker-registry, buildah.

Two stacks are used:
- the project's stack (STACK_DIR/ports from the environment, as `make test` exports them); the
  session fixture starts it if it is not running, and stops it again only if it started it;
- a throwaway stack in a temporary folder on free ports, for what must not disturb the first:
  `up` twice, the registry's notifications, `down` stopping only its own pids. It runs a copy of
  scripts/stack.py and scripts/local_stack/ in a scratch project whose `devhost` is a tiny recording
  HTTP server, so the test sees exactly what the real local host would get (environment, webhook
  calls, key header).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
STACK_PY = PROJECT / "scripts" / "stack.py"
STACK_PACKAGE = PROJECT / "scripts" / "local_stack"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def _load_stack_module():
    spec = importlib.util.spec_from_file_location("basetrigger_stack", STACK_PY)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    return module


stack = _load_stack_module()


def run_stack(*args: str, env: dict[str, str] | None = None, script: Path = STACK_PY, check: bool = True):
    res = subprocess.run(
        [sys.executable, str(script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    if check and res.returncode != 0:
        pytest.fail(f"stack.py {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res


def free_ports(n: int) -> list[int]:
    """n distinct ports that are free right now (bound to port 0 together, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def no_proxy_open(url: str, context: ssl.SSLContext | None = None, timeout: float = 5, **kw):
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    return urllib.request.build_opener(*handlers).open(urllib.request.Request(url, **kw), timeout=timeout)


def buildah(storage: Path, *args: str) -> subprocess.CompletedProcess:
    """buildah with its own storage under the test's temp dir (no shared /var/lib/containers)."""
    cmd = [
        "buildah",
        "--root",
        str(storage / "root"),
        "--runroot",
        str(storage / "run"),
        "--storage-driver",
        "vfs",
        *args,
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stdout}\n{res.stderr}"
    return res


def build_and_push_busybox(storage: Path, context: Path, ref: str, cert_dir: str) -> None:
    """A FROM-scratch image from busybox-static, as the demo's base images are made."""
    context.mkdir(parents=True, exist_ok=True)
    shutil.copy2("/bin/busybox", context / "busybox")
    (context / "Dockerfile").write_text(
        "FROM scratch\n"
        "COPY busybox /bin/busybox\n"
        'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
        f'RUN echo "{uuid.uuid4()}" > /stamp\n'  # a new digest on every run
        'CMD ["/bin/sh"]\n'
    )
    buildah(
        storage,
        "bud",
        "--quiet",
        "--isolation",
        "chroot",
        "-f",
        str(context / "Dockerfile"),
        "-t",
        ref,
        str(context),
    )
    buildah(storage, "push", "--quiet", "--cert-dir", cert_dir, ref)


# ------------------------------------------------------------------------------------------------
# The project's stack
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def project_stack():
    cfg = stack.load_config()
    states = stack.status(cfg)
    started = not (states["azurite"] == "running" and states["registry"] == "running")
    if started:
        run_stack("up")
    yield cfg
    if started:
        run_stack("down", check=False)


def test_azurite_tables_answer(project_stack):
    from azure.data.tables import TableServiceClient

    client = TableServiceClient.from_connection_string(stack.connection_string(project_stack))
    name = "stacktest" + uuid.uuid4().hex[:12]
    client.create_table(name)
    try:
        assert name in [t.name for t in client.query_tables(f"TableName eq '{name}'")]
    finally:
        client.delete_table(name)
    assert name not in [t.name for t in client.query_tables(f"TableName eq '{name}'")]


def test_registry_answers_over_tls_with_our_ca(project_stack):
    with no_proxy_open(
        f"https://{project_stack.registry}/v2/", stack.registry_context(project_stack)
    ) as resp:
        assert resp.status == 200
        assert resp.headers["Docker-Distribution-Api-Version"] == "registry/2.0"


def test_registry_is_refused_without_our_ca(project_stack):
    with pytest.raises(urllib.error.URLError) as info:
        no_proxy_open(f"https://{project_stack.registry}/v2/", ssl.create_default_context())
    assert isinstance(info.value.reason, ssl.SSLCertVerificationError)


def test_registry_certificate_names_all_loopback_names(project_stack):
    ctx = stack.registry_context(project_stack)
    for host in ("localhost", "127.0.0.1"):
        with socket.create_connection(("127.0.0.1", project_stack.registry_port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname=host) as tls:
                assert tls.version()


def test_env_command_matches_stack_env(project_stack):
    out = run_stack("env").stdout
    exported = {}
    for line in out.splitlines():
        assert line.startswith("export ")
        key, _, value = line[len("export ") :].partition("=")
        exported[key] = subprocess.run(
            ["bash", "-c", f"printf %s {value}"], capture_output=True, text=True, check=True
        ).stdout
    assert exported == stack.stack_env(project_stack.stack_dir)
    for name in (
        "AzureWebJobsStorage",
        "BASETRIGGER_REGISTRY_CA",
        "BASETRIGGER_URL",
        "BASETRIGGER_KEY",
        "REGISTRY",
    ):
        assert exported[name], name
    assert exported["REGISTRY"] == f"localhost:{project_stack.registry_port}"
    assert Path(exported["BASETRIGGER_REGISTRY_CA"]).is_file()
    assert (
        f"TableEndpoint=http://127.0.0.1:{project_stack.table_port}/devstoreaccount1"
        in (exported["AzureWebJobsStorage"])
    )


def test_buildah_builds_from_scratch_and_pushes(project_stack, tmp_path):
    ref = f"{project_stack.registry}/stacktest/busybox:{uuid.uuid4().hex[:8]}"
    build_and_push_busybox(tmp_path / "storage", tmp_path / "ctx", ref, str(project_stack.cert_dir))
    repo, tag = ref.split("/", 1)[1].rsplit(":", 1)
    req_headers = {"Accept": f"{OCI_MANIFEST}, {DOCKER_MANIFEST}"}
    url = f"https://{project_stack.registry}/v2/{repo}/manifests/{tag}"
    with no_proxy_open(url, stack.registry_context(project_stack), headers=req_headers) as resp:
        assert resp.status == 200
        assert resp.headers["Docker-Content-Digest"].startswith("sha256:")
        manifest = json.load(resp)
    assert len(manifest["layers"]) >= 1


# ------------------------------------------------------------------------------------------------
# A throwaway stack
# ------------------------------------------------------------------------------------------------

FAKE_DEVHOST = r'''
"""Stands in for the real devhost: records its environment and every webhook call."""
import argparse, json, os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
args = parser.parse_args()
out = Path(os.environ["BASETRIGGER_WORK_DIR"])
out.mkdir(parents=True, exist_ok=True)
(out / "host-env.json").write_text(json.dumps(dict(os.environ)))


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path != "/admin/host/status":
            self.send_response(404)
            self.end_headers()
            return
        body = json.dumps({"state": "Running", "errors": {"fake_fn": "a fake error"}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        record = {"path": self.path, "headers": dict(self.headers), "body": body.decode()}
        with open(out / "hooks.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")
        self.send_response(200)
        self.end_headers()


ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()
'''


@pytest.fixture(scope="module")
def scratch_stack(tmp_path_factory):
    """A copy of the stack scripts in a scratch project with a fake devhost, its own dir and ports."""
    root = tmp_path_factory.mktemp("scratch")
    project = root / "project"
    (project / "scripts").mkdir(parents=True)
    (project / "devhost").mkdir()
    shutil.copy2(STACK_PY, project / "scripts" / "stack.py")
    shutil.copytree(
        STACK_PACKAGE, project / "scripts" / STACK_PACKAGE.name, ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy2(PROJECT / "local.settings.example.json", project)
    (project / "devhost" / "__init__.py").write_text("")
    (project / "devhost" / "__main__.py").write_text(FAKE_DEVHOST)

    ports = dict(zip(stack.PORT_DEFAULTS, free_ports(len(stack.PORT_DEFAULTS)), strict=True))
    azurite = stack.azurite_command(stack.load_config())[0]  # the project's installed Azurite
    env = {
        **os.environ,
        **{k: str(v) for k, v in ports.items()},
        "STACK_DIR": str(root / "stack"),
        "AZURITE_BIN": azurite,
        "DEVHOST_KEY": "scratch-key-" + uuid.uuid4().hex,
    }
    # Let the scratch stack choose these (this test's environment may carry the project stack's).
    for name in ("BASETRIGGER_WORK_DIR", "BASETRIGGER_SECRET_KEY", "BASETRIGGER_BUILD_QUEUE"):
        env.pop(name, None)
    script = project / "scripts" / "stack.py"
    first = run_stack("up", env=env, script=script)
    cfg = stack.load_config(root / "stack", env)
    yield {"cfg": cfg, "env": env, "script": script, "first_up": first.stdout}
    run_stack("down", env=env, script=script, check=False)


def _pids(cfg) -> dict[str, int | None]:
    return {part: stack.read_pid(cfg, part) for part in stack.PARTS}


def test_scratch_stack_starts_every_part(scratch_stack):
    cfg = scratch_stack["cfg"]
    assert stack.status(cfg) == {part: "running" for part in stack.PARTS}
    out = scratch_stack["first_up"]
    for expected in (
        f"http://127.0.0.1:{cfg.blob_port}/devstoreaccount1",
        f"https://localhost:{cfg.registry_port}",
        str(cfg.ca_cert),
        f"http://127.0.0.1:{cfg.host_port}",
        str(cfg.key_file),
        "eval",
        "host: WARNING function fake_fn is not served: a fake error",
    ):
        assert expected in out
    for part in stack.PARTS:
        assert (cfg.logs_dir / f"{part}.log").exists()


def test_second_up_is_harmless(scratch_stack):
    cfg = scratch_stack["cfg"]
    before = _pids(cfg)
    res = run_stack("up", env=scratch_stack["env"], script=scratch_stack["script"])
    assert res.stdout.count("already running") == len(stack.PARTS), res.stdout
    assert _pids(cfg) == before
    assert stack.status(cfg) == {part: "running" for part in stack.PARTS}


def test_host_gets_the_stack_environment(scratch_stack):
    cfg, env = scratch_stack["cfg"], scratch_stack["env"]
    host_env = json.loads((cfg.work_dir / "host-env.json").read_text())
    assert host_env["AzureWebJobsStorage"] == stack.connection_string(cfg)
    assert (
        f"QueueEndpoint=http://127.0.0.1:{cfg.queue_port}/devstoreaccount1" in host_env["AzureWebJobsStorage"]
    )
    assert host_env["DEVHOST_KEY"] == env["DEVHOST_KEY"]
    assert host_env["BASETRIGGER_REGISTRY_CA"] == str(cfg.ca_cert)
    assert host_env["BASETRIGGER_WORK_DIR"] == str(cfg.work_dir)
    assert host_env["BASETRIGGER_SECRET_KEY"]
    # app settings default to local.settings.example.json's values (no local.settings.json here)
    assert host_env["BASETRIGGER_BUILD_QUEUE"] == "build-runs"
    assert host_env["FUNCTIONS_WORKER_RUNTIME"] == "python"
    assert host_env["PATH"] == env["PATH"]  # the rest of the environment passes through
    # the key is kept in the stack dir too, so `env` in another shell prints the one in use
    assert cfg.key_file.read_text().strip() == env["DEVHOST_KEY"]


def test_up_reloads_a_host_whose_code_changed_only_when_asked(scratch_stack):
    cfg, env, script = scratch_stack["cfg"], scratch_stack["env"], scratch_stack["script"]
    before = stack.read_pid(cfg, "host")
    code = script.parent.parent / "devhost" / "__main__.py"
    later = time.time() + 5
    os.utime(code, (later, later))

    res = run_stack("up", env=env, script=script)
    assert "WARNING devhost/__main__.py changed since the host started" in res.stdout
    assert stack.read_pid(cfg, "host") == before

    res = run_stack("up", "--reload-host", env=env, script=script)
    assert "restarting it" in res.stdout
    after = stack.read_pid(cfg, "host")
    assert after != before and not stack.proc_alive(before)
    assert stack.status(cfg)["host"] == "running"


def test_registry_notification_reaches_the_host(scratch_stack, tmp_path):
    cfg, env = scratch_stack["cfg"], scratch_stack["env"]
    tag = uuid.uuid4().hex[:8]
    ref = f"{cfg.registry}/stacktest/notify:{tag}"
    build_and_push_busybox(tmp_path / "storage", tmp_path / "ctx", ref, str(cfg.cert_dir))

    hooks = cfg.work_dir / "hooks.jsonl"
    deadline = time.monotonic() + 30
    manifest_pushes = []
    while time.monotonic() < deadline and not manifest_pushes:
        calls = [json.loads(line) for line in hooks.read_text().splitlines()] if hooks.exists() else []
        events = [(c, e) for c in calls for e in json.loads(c["body"])["events"]]
        manifest_pushes = [
            (c, e) for c, e in events if e["action"] == "push" and e["target"].get("tag") == tag
        ]
        time.sleep(0.2)
    got = hooks.read_text() if hooks.exists() else "nothing"
    assert manifest_pushes, f"no manifest push event for {ref} reached the host; got: {got}"
    call, event = manifest_pushes[0]
    assert call["path"] == "/api/hooks/distribution"
    headers = {k.lower(): v for k, v in call["headers"].items()}
    assert headers["x-functions-key"] == env["DEVHOST_KEY"]
    assert headers["content-type"].startswith("application/vnd.docker.distribution.events.v1+json")
    assert event["target"]["repository"] == "stacktest/notify"
    assert event["request"]["host"] == cfg.registry
    # Pull events arrive too: distribution 2.8 does not apply the endpoint's ignore.actions
    # (see scripts/local_stack/registry.py), so the webhook has to skip them; not asserted either way here.


def test_down_stops_only_our_processes(scratch_stack, project_stack):
    cfg, env, script = scratch_stack["cfg"], scratch_stack["env"], scratch_stack["script"]
    project_pids = {p: stack.running_pid(project_stack, p) for p in stack.PARTS}
    pids = _pids(cfg)

    res = run_stack("down", env=env, script=script)
    for part, pid in pids.items():
        assert f"{part}: stopped (pid {pid}" in res.stdout
        assert not stack.proc_alive(pid)
        assert not stack.pid_file(cfg, part).exists()
    assert all(stack.running_pid(cfg, part) is None for part in stack.PARTS)
    assert run_stack("status", env=env, script=script, check=False).returncode == 3
    # the project's stack did not notice
    assert {p: stack.running_pid(project_stack, p) for p in stack.PARTS} == project_pids

    # A pid file that names somebody else's process: a live process whose command line even looks
    # like ours ("-m devhost"), but that this stack did not start. `down` must leave it alone.
    decoy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "-m", "devhost"])
    try:
        stack.pid_file(cfg, "host").write_text(f"{decoy.pid}\n")
        res = run_stack("down", env=env, script=script)
        assert "left alone" in res.stdout
        time.sleep(0.3)
        assert decoy.poll() is None, "down killed a process that was not ours"
        assert not stack.pid_file(cfg, "host").exists()
    finally:
        decoy.send_signal(signal.SIGTERM)
        decoy.wait(10)

    # and the stack comes back on the same dir, reusing its CA and data
    ca_before = cfg.ca_cert.read_bytes()
    run_stack("up", env=env, script=script)
    assert stack.status(cfg) == {part: "running" for part in stack.PARTS}
    assert cfg.ca_cert.read_bytes() == ca_before
