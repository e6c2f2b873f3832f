#!/usr/bin/env python3
"""The local stack basetrigger runs and is tested on: Azurite, a TLS registry, the local Functions host.

    python3 scripts/stack.py up        # start what is not running yet (harmless when all runs)
    python3 scripts/stack.py status    # running / stopped, per part
    python3 scripts/stack.py env       # `export K=V` lines: eval "$(python3 scripts/stack.py env)"
    python3 scripts/stack.py down      # stop exactly what `up` started, by pid

Parts (see docs/contract.md and shared/LOCAL-STACK.md):
  azurite   Azure Storage emulator (npm, installed by scripts/install.sh), blob/queue/table on 127.0.0.1
  registry  Debian's docker-registry (CNCF distribution 2.8) with TLS from a CA made here, notifying
            the host's webhook on every push
  host      `python -m devhost --port HOST_PORT` from the project root (skipped until devhost/ exists)

Everything lives in STACK_DIR (default <project>/.stack): data, logs/<part>.log, pids/<part>.pid,
the CA, the function key. Settings come from flags, then environment variables, then what the last
`up` of this STACK_DIR recorded in stack.json, then the defaults. Only the standard library is
used, so this runs before anything is pip-installed.

Other code can import it: `stack_env(stack_dir) -> dict` gives the same values as `env`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent

# Azurite's well-known development account. The key is public (documented by Microsoft) and only
# valid against the emulator; shared/config.py refuses key-based connection strings for anything else.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

# env var -> default; the same names are the flags (--azurite-blob-port, ...).
PORT_DEFAULTS = {
    "AZURITE_BLOB_PORT": 10000,
    "AZURITE_QUEUE_PORT": 10001,
    "AZURITE_TABLE_PORT": 10002,
    "REGISTRY_PORT": 5000,
    "HOST_PORT": 7071,
}

# Start order; `down` goes the other way (the host first, so it never sees storage vanish under it).
PARTS = ("azurite", "registry", "host")

# How long each part may take to answer after its start, in seconds.
READY_TIMEOUT = {"azurite": 60.0, "registry": 30.0, "host": 60.0}
# How long a part may take to exit after SIGTERM before it gets SIGKILL. The host lets in-flight
# invocations finish (devhost --grace, 30 s by default), so it gets longer.
STOP_TIMEOUT = {"azurite": 10.0, "registry": 10.0, "host": 40.0}

# Where the Functions host's webhook lives (functions/webhook_ingress.py, route hooks/distribution).
WEBHOOK_PATH = "/api/hooks/distribution"

# Where buildah and skopeo look for per-registry CAs when no --cert-dir is given.
SYSTEM_CERTS_D = Path("/etc/containers/certs.d")


class StackError(RuntimeError):
    """Something the user has to act on; printed without a traceback."""


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StackConfig:
    stack_dir: Path
    blob_port: int = PORT_DEFAULTS["AZURITE_BLOB_PORT"]
    queue_port: int = PORT_DEFAULTS["AZURITE_QUEUE_PORT"]
    table_port: int = PORT_DEFAULTS["AZURITE_TABLE_PORT"]
    registry_port: int = PORT_DEFAULTS["REGISTRY_PORT"]
    host_port: int = PORT_DEFAULTS["HOST_PORT"]

    # Layout of STACK_DIR ------------------------------------------------------------------------
    @property
    def logs_dir(self) -> Path:
        return self.stack_dir / "logs"

    @property
    def pids_dir(self) -> Path:
        return self.stack_dir / "pids"

    @property
    def azurite_dir(self) -> Path:
        return self.stack_dir / "azurite"

    @property
    def registry_dir(self) -> Path:
        return self.stack_dir / "registry"

    @property
    def registry_config(self) -> Path:
        return self.registry_dir / "config.yml"

    @property
    def ca_cert(self) -> Path:
        return self.registry_dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.registry_dir / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.registry_dir / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.registry_dir / "server.key"

    @property
    def registry(self) -> str:
        """The registry as image references name it."""
        return f"localhost:{self.registry_port}"

    @property
    def cert_dir(self) -> Path:
        """The folder to give buildah/skopeo as --cert-dir (holds ca.crt)."""
        return self.registry_dir / "certs.d" / self.registry

    @property
    def work_dir(self) -> Path:
        return self.stack_dir / "work"

    @property
    def key_file(self) -> Path:
        return self.stack_dir / "devhost.key"

    @property
    def secret_key_file(self) -> Path:
        return self.stack_dir / "secret.key"

    @property
    def state_file(self) -> Path:
        return self.stack_dir / "stack.json"

    # Endpoints ------------------------------------------------------------------------------------
    def azurite_url(self, service: str) -> str:
        port = {"blob": self.blob_port, "queue": self.queue_port, "table": self.table_port}[service]
        return f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"

    @property
    def host_url(self) -> str:
        return f"http://127.0.0.1:{self.host_port}"

    @property
    def webhook_url(self) -> str:
        return self.host_url + WEBHOOK_PATH

    def ports(self) -> dict[str, int]:
        return {
            "AZURITE_BLOB_PORT": self.blob_port,
            "AZURITE_QUEUE_PORT": self.queue_port,
            "AZURITE_TABLE_PORT": self.table_port,
            "REGISTRY_PORT": self.registry_port,
            "HOST_PORT": self.host_port,
        }


_FIELD_OF = {
    "AZURITE_BLOB_PORT": "blob_port",
    "AZURITE_QUEUE_PORT": "queue_port",
    "AZURITE_TABLE_PORT": "table_port",
    "REGISTRY_PORT": "registry_port",
    "HOST_PORT": "host_port",
}


def default_stack_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    raw = env.get("STACK_DIR") or str(PROJECT / ".stack")
    # Absolute on purpose: the path goes into the registry config and into pid identity checks.
    return Path(raw).expanduser().resolve()


def load_config(
    stack_dir: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    **ports: int | None,
) -> StackConfig:
    """Settings for one stack: explicit arguments, then env, then the stack's stack.json, then defaults.

    `ports` takes the env var names in lower case (azurite_blob_port=..., host_port=...).
    """
    env = os.environ if env is None else env
    sdir = Path(stack_dir).expanduser().resolve() if stack_dir else default_stack_dir(env)
    recorded: dict[str, int] = {}
    with contextlib.suppress(OSError, ValueError):
        recorded = json.loads((sdir / "stack.json").read_text()).get("ports", {})
    values: dict[str, int] = {}
    for name, default in PORT_DEFAULTS.items():
        explicit = ports.get(name.lower())
        raw: object = explicit if explicit is not None else env.get(name) or recorded.get(name, default)
        try:
            port = int(str(raw))
        except ValueError:
            raise StackError(f"{name} must be a port number, not {raw!r}") from None
        if not 0 < port < 65536:
            raise StackError(f"{name} must be a port number, not {port}")
        values[_FIELD_OF[name]] = port
    cfg = StackConfig(stack_dir=sdir, **values)
    if len(set(cfg.ports().values())) != len(PORT_DEFAULTS):
        raise StackError(f"the stack's ports must all differ: {cfg.ports()}")
    return cfg


def connection_string(cfg: StackConfig) -> str:
    """A full Azurite connection string with explicit endpoints (works for non-default ports)."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_ACCOUNT_KEY};"
        f"BlobEndpoint={cfg.azurite_url('blob')};"
        f"QueueEndpoint={cfg.azurite_url('queue')};"
        f"TableEndpoint={cfg.azurite_url('table')};"
    )


def function_key(cfg: StackConfig, env: Mapping[str, str] | None = None, create: bool = False) -> str | None:
    """The local host's function key: DEVHOST_KEY, else $STACK_DIR/devhost.key (made once by `up`).

    `up` writes a key given in DEVHOST_KEY to the file too, so that `env` in another shell (without
    DEVHOST_KEY) prints the key the running host and registry actually use.
    """
    env = os.environ if env is None else env
    given = env.get("DEVHOST_KEY", "").strip()
    stored = cfg.key_file.read_text().strip() if cfg.key_file.exists() else ""
    if not create:
        return given or stored or None
    key = given or stored or secrets.token_urlsafe(32)
    if key != stored:
        cfg.stack_dir.mkdir(parents=True, exist_ok=True)
        _write_private(cfg.key_file, key + "\n")
    return key


def secret_key(cfg: StackConfig, create: bool = False) -> str | None:
    """A Fernet key for BASETRIGGER_SECRET_KEY (shared/secrets.py), made once per stack dir.

    A Fernet key is 32 random bytes, url-safe base64; made with the stdlib so this script needs
    no `cryptography`.
    """
    if cfg.secret_key_file.exists():
        return cfg.secret_key_file.read_text().strip()
    if not create:
        return None
    key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    _write_private(cfg.secret_key_file, key + "\n")
    return key


def stack_env(
    stack_dir: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """What a test or script needs to use the stack (the `env` command prints exactly this)."""
    return env_for(load_config(stack_dir, env), env)


def env_for(cfg: StackConfig, env: Mapping[str, str] | None = None) -> dict[str, str]:
    env = os.environ if env is None else env
    return {
        "STACK_DIR": str(cfg.stack_dir),
        "AzureWebJobsStorage": connection_string(cfg),
        "BASETRIGGER_REGISTRY_CA": str(cfg.ca_cert),
        "BASETRIGGER_WORK_DIR": env.get("BASETRIGGER_WORK_DIR") or str(cfg.work_dir),
        "BASETRIGGER_URL": cfg.host_url,
        "BASETRIGGER_KEY": function_key(cfg, env) or "",
        "BASETRIGGER_SECRET_KEY": env.get("BASETRIGGER_SECRET_KEY") or secret_key(cfg) or "",
        "REGISTRY": cfg.registry,
        "BASETRIGGER_REGISTRY": cfg.registry,
        "REGISTRY_CERT_DIR": str(cfg.cert_dir),
    }


def example_settings() -> dict[str, str]:
    """`Values` of local.settings.example.json (the local defaults of every app setting)."""
    try:
        values = json.loads((PROJECT / "local.settings.example.json").read_text()).get("Values", {})
    except (OSError, ValueError):
        return {}
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in values.items() if v is not None}


def host_environment(cfg: StackConfig, key: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment the local Functions host runs with.

    Everything already in the environment passes through (so BASETRIGGER_* settings given by the
    caller reach the app); the values that tie the host to *this* stack are forced, since a stale
    AzureWebJobsStorage from another shell would point it at the wrong emulator.
    """
    env = dict(os.environ if base is None else base)
    env.setdefault("BASETRIGGER_WORK_DIR", str(cfg.work_dir))
    env.setdefault("BASETRIGGER_SECRET_KEY", secret_key(cfg, create=True) or "")
    # App settings the bindings need (%BASETRIGGER_BUILD_QUEUE% ...). With a local.settings.json,
    # devhost reads it itself (environment first, as Core Tools does); without one (a fresh clone,
    # CI) the example's values stand in, as if it had been copied.
    if not (PROJECT / "local.settings.json").exists():
        for name, value in example_settings().items():
            if value:  # "" means "not set" in the example
                env.setdefault(name, value)
    env.update(
        {
            "AzureWebJobsStorage": connection_string(cfg),
            "BASETRIGGER_REGISTRY_CA": str(cfg.ca_cert),
            "DEVHOST_KEY": key,
            "REGISTRY": cfg.registry,
            # Task images without a registry host (`helloworld:{{.Run.ID}}`) go to this registry.
            "BASETRIGGER_REGISTRY": cfg.registry,
            "REGISTRY_CERT_DIR": str(cfg.cert_dir),
            "PYTHONUNBUFFERED": "1",  # so logs/host.log is current while it runs
        }
    )
    return env


# --------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def _write_if_changed(path: Path, text: str) -> bool:
    """Write atomically; return whether the content changed."""
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    # Owner-only: some of these files carry the function key (the registry's notification header).
    tmp.chmod(0o600)
    tmp.replace(path)
    return True


def _log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text) or "    (log is empty)"


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _locked(cfg: StackConfig) -> Iterator[None]:
    """Serialise `up`/`down` on one STACK_DIR (several engineers and test sessions share a checkout)."""
    cfg.stack_dir.mkdir(parents=True, exist_ok=True)
    with open(cfg.stack_dir / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _say(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------------------------------
# Processes: pid files and "is this pid still ours?"
# --------------------------------------------------------------------------------------------------
# A pid file alone is not proof: after a reboot or a crash the number may belong to anything. So a
# pid counts as ours only if the process is alive, its command line has the part's identifying
# arguments, and (where /proc lets us read it) its environment carries BASETRIGGER_STACK_DIR=<this
# stack dir>, which `up` sets on everything it starts.


def pid_file(cfg: StackConfig, part: str) -> Path:
    return cfg.pids_dir / f"{part}.pid"


def read_pid(cfg: StackConfig, part: str) -> int | None:
    try:
        return int(pid_file(cfg, part).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _proc_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie has exited; it only waits to be reaped


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def _environ_marker(pid: int) -> str | None:
    """The BASETRIGGER_STACK_DIR the process was started with; None if /proc does not tell us."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    for item in raw.split(b"\0"):
        if item.startswith(b"BASETRIGGER_STACK_DIR="):
            return item.split(b"=", 1)[1].decode(errors="replace")
    return ""


def _process_start_time(pid: int) -> float | None:
    """When the process started, in seconds since the epoch (from /proc)."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(
            int(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime")
        )
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")


# What the host loads. If any of it changed after the host started, the host serves old code.
HOST_CODE = (
    "function_app.py",
    "host.json",
    "local.settings.json",
    "local.settings.example.json",
    "functions",
    "shared",
    "devhost",
)


def host_code_changed(pid: int) -> str | None:
    """A file of the host's code newer than the running host (relative path), or None."""
    started = _process_start_time(pid)
    if started is None:
        return None
    for name in HOST_CODE:
        path = PROJECT / name
        files = [path] if path.is_file() else (path.rglob("*.py") if path.is_dir() else [])
        for f in files:
            with contextlib.suppress(OSError):
                # 1 s of slack: /proc's start time has clock-tick resolution, mtimes are exact.
                if f.stat().st_mtime > started + 1:
                    return str(f.relative_to(PROJECT))
    return None


def _identity(cfg: StackConfig, part: str) -> list[str]:
    """Arguments that the part's command line must contain."""
    if part == "azurite":
        return ["--location", str(cfg.azurite_dir)]
    if part == "registry":
        return ["serve", str(cfg.registry_config)]
    if part == "host":
        return ["-m", "devhost"]
    raise KeyError(part)


def is_ours(cfg: StackConfig, part: str, pid: int) -> bool:
    if not _proc_alive(pid):
        return False
    argv = _cmdline(pid)
    if not all(token in argv for token in _identity(cfg, part)):
        return False
    marker = _environ_marker(pid)
    return marker is None or marker == str(cfg.stack_dir)


def running_pid(cfg: StackConfig, part: str) -> int | None:
    """The pid of the part if it runs and is ours, else None."""
    pid = read_pid(cfg, part)
    return pid if pid is not None and is_ours(cfg, part, pid) else None


def _spawn(cfg: StackConfig, part: str, argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
    cfg.logs_dir.mkdir(parents=True, exist_ok=True)
    cfg.pids_dir.mkdir(parents=True, exist_ok=True)
    env = dict(env, BASETRIGGER_STACK_DIR=str(cfg.stack_dir))
    log_path = cfg.logs_dir / f"{part}.log"
    # Owner-only: logs of the stack's parts may quote keys (the host logs a key it generates).
    with os.fdopen(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as log:
        os.fchmod(log.fileno(), 0o600)
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} start: {shlex.join(argv)}\n".encode())
        log.flush()
        # A new session: the part outlives this script, gets no signal from this terminal's ^C, and
        # is the leader of its own process group, which `down` signals as a whole (so the host's
        # children, e.g. a buildah build, stop with it).
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    pid_file(cfg, part).write_text(f"{proc.pid}\n")
    return proc


def _wait_ready(
    cfg: StackConfig,
    part: str,
    ready: Callable[[], bool],
    proc: subprocess.Popen | None,
    timeout: float,
) -> None:
    deadline = time.monotonic() + timeout
    pid = proc.pid if proc else read_pid(cfg, part)
    while True:
        if ready():
            return
        dead = proc.poll() is not None if proc else (pid is None or not _proc_alive(pid))
        if dead:
            with contextlib.suppress(OSError):
                pid_file(cfg, part).unlink()
            raise StackError(
                f"{part} exited before it was ready"
                + (f" (exit code {proc.returncode})" if proc else "")
                + f"; last lines of {cfg.logs_dir / (part + '.log')}:\n"
                + _log_tail(cfg.logs_dir / f"{part}.log")
            )
        if time.monotonic() > deadline:
            if proc:  # ours and useless: do not leave it holding the port
                _terminate(proc.pid)
                with contextlib.suppress(OSError):
                    pid_file(cfg, part).unlink()
            raise StackError(
                f"{part} did not become ready within {timeout:.0f}s; last lines of "
                f"{cfg.logs_dir / (part + '.log')}:\n" + _log_tail(cfg.logs_dir / f"{part}.log")
            )
        time.sleep(0.2)


def _signal_group(pid: int, sig: int) -> None:
    # `up` made each part a session (and process-group) leader; signal the group when that still
    # holds, the single process otherwise.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def _terminate(pid: int, timeout: float = 10.0) -> bool:
    """SIGTERM, wait, SIGKILL. Returns True if SIGKILL was needed."""
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _proc_alive(pid):
            return False
        time.sleep(0.1)
    _signal_group(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while _proc_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return True


# --------------------------------------------------------------------------------------------------
# Readiness probes
# --------------------------------------------------------------------------------------------------


def azurite_ready(cfg: StackConfig) -> bool:
    return all(port_open(p) for p in (cfg.blob_port, cfg.queue_port, cfg.table_port))


def registry_context(cfg: StackConfig) -> ssl.SSLContext:
    """An SSL context that trusts exactly the stack's CA."""
    return ssl.create_default_context(cafile=str(cfg.ca_cert))


def _open(url: str, context: ssl.SSLContext | None = None, timeout: float = 2):
    # No proxies: an http(s)_proxy in the environment must not capture requests to 127.0.0.1.
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    return urllib.request.build_opener(*handlers).open(url, timeout=timeout)


def registry_ready(cfg: StackConfig) -> bool:
    try:
        with _open(f"https://{cfg.registry}/v2/", registry_context(cfg)) as resp:
            return resp.status == 200
    except (OSError, ssl.SSLError, urllib.error.URLError):
        return False


def host_status(cfg: StackConfig) -> dict | None:
    """The host's GET /admin/host/status (as under Core Tools), or None while it does not answer.

    Any HTTP answer means the host is up; {} when it answered without a JSON status.
    """
    try:
        with _open(cfg.host_url + "/admin/host/status") as resp:
            body = resp.read()
    except urllib.error.HTTPError:
        return {}
    except (OSError, urllib.error.URLError):
        return None
    try:
        doc = json.loads(body)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def host_ready(cfg: StackConfig) -> bool:
    return host_status(cfg) is not None


READY: dict[str, Callable[[StackConfig], bool]] = {
    "azurite": azurite_ready,
    "registry": registry_ready,
    "host": host_ready,
}


def _part_ports(cfg: StackConfig, part: str) -> list[int]:
    return {
        "azurite": [cfg.blob_port, cfg.queue_port, cfg.table_port],
        "registry": [cfg.registry_port],
        "host": [cfg.host_port],
    }[part]


# --------------------------------------------------------------------------------------------------
# TLS material and registry configuration
# --------------------------------------------------------------------------------------------------


def _openssl(*args: str) -> None:
    if not shutil.which("openssl"):
        raise StackError("openssl is not installed; run scripts/install.sh")
    res = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if res.returncode != 0:
        raise StackError(f"openssl {args[0]} failed:\n{res.stderr.strip()}")


def ensure_certificates(cfg: StackConfig) -> list[str]:
    """A CA (made once per stack dir) and a server certificate for localhost signed by it."""
    made = []
    cfg.registry_dir.mkdir(parents=True, exist_ok=True)
    if not (cfg.ca_cert.exists() and cfg.ca_key.exists()):
        _openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "3650",
            "-keyout", str(cfg.ca_key), "-out", str(cfg.ca_cert),
            "-subj", "/CN=basetrigger local stack CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-addext", "subjectKeyIdentifier=hash",
        )  # fmt: skip
        os.chmod(cfg.ca_key, 0o600)
        cfg.server_cert.unlink(missing_ok=True)  # signed by the old CA, if any
        made.append(f"CA {cfg.ca_cert}")
    if not (cfg.server_cert.exists() and cfg.server_key.exists()):
        csr = cfg.registry_dir / "server.csr"
        ext = cfg.registry_dir / "server.ext"
        # SANs for every name a client may use; the key identifiers and key usages make it pass
        # strict verifiers too (Go's crypto/x509, OpenSSL 3 with X509_STRICT as in Python 3.13+).
        ext.write_text(
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\n"
            "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n"
            "subjectKeyIdentifier=hash\n"
            "authorityKeyIdentifier=keyid,issuer\n"
        )
        _openssl(
            "req", "-new", "-newkey", "rsa:2048", "-nodes", "-sha256",
            "-keyout", str(cfg.server_key), "-out", str(csr), "-subj", "/CN=localhost",
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-sha256", "-days", "825", "-in", str(csr),
            "-CA", str(cfg.ca_cert), "-CAkey", str(cfg.ca_key), "-CAcreateserial",
            "-out", str(cfg.server_cert), "-extfile", str(ext),
        )  # fmt: skip
        os.chmod(cfg.server_key, 0o600)
        csr.unlink(missing_ok=True)
        made.append(f"server certificate {cfg.server_cert}")
    # buildah/skopeo --cert-dir wants a folder holding ca.crt.
    _write_if_changed(cfg.cert_dir / "ca.crt", cfg.ca_cert.read_text())
    return made


def registry_config_text(cfg: StackConfig, key: str) -> str:
    """config.yml for docker-registry (distribution 2.8). Strings are JSON-quoted, which YAML reads."""
    q = json.dumps
    return f"""\
# Written by scripts/stack.py on every `up`; edits are overwritten.
version: 0.1
log:
  # info would log every notification with its headers, the function key among them.
  level: warn
  fields:
    service: registry
storage:
  filesystem:
    rootdirectory: {q(str(cfg.registry_dir / "data"))}
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: {q(f"127.0.0.1:{cfg.registry_port}")}
  tls:
    certificate: {q(str(cfg.server_cert))}
    key: {q(str(cfg.server_key))}
  headers:
    X-Content-Type-Options: [nosniff]
notifications:
  events:
    includereferences: true
  endpoints:
    - name: basetrigger
      url: {q(cfg.webhook_url)}
      headers:
        x-functions-key: [{q(key)}]
      timeout: 5s
      threshold: 5
      backoff: 1s
      # Pulls are noise for the webhook. Note: distribution 2.8 (Debian's) parses ignore.actions
      # but does not apply it (only 3.x wires it through), so pull events still arrive and the
      # webhook must skip them itself; the setting takes effect on a newer registry.
      ignore:
        actions: [pull]
"""


def _register_system_trust(cfg: StackConfig) -> list[str]:
    """Let buildah/skopeo trust the registry without --cert-dir, where /etc/containers is writable.

    Returns the files written (recorded in stack.json so `down` removes exactly those).
    """
    written = []
    for host in (cfg.registry, f"127.0.0.1:{cfg.registry_port}"):
        target = SYSTEM_CERTS_D / host / "ca.crt"
        try:
            _write_if_changed(target, cfg.ca_cert.read_text())
        except OSError:
            continue
        written.append(str(target))
    return written


def _unregister_system_trust(cfg: StackConfig, files: list[str]) -> list[str]:
    removed = []
    ca = cfg.ca_cert.read_text() if cfg.ca_cert.exists() else None
    for name in files:
        path = Path(name)
        with contextlib.suppress(OSError):
            if ca is not None and path.read_text() == ca:  # still ours, not another stack's
                path.unlink()
                removed.append(name)
                with contextlib.suppress(OSError):
                    path.parent.rmdir()
    return removed


def _read_state(cfg: StackConfig) -> dict:
    try:
        return json.loads(cfg.state_file.read_text())
    except (OSError, ValueError):
        return {}


# --------------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------------


def azurite_command(cfg: StackConfig) -> list[str]:
    candidates = [
        os.environ.get("AZURITE_BIN", ""),
        str(PROJECT / ".stack/node/node_modules/.bin/azurite"),  # where scripts/install.sh puts it
        str(cfg.stack_dir / "node/node_modules/.bin/azurite"),
        shutil.which("azurite") or "",
    ]
    binary = next((c for c in candidates if c and os.access(c, os.X_OK)), None)
    if binary is None:
        raise StackError("azurite is not installed; run scripts/install.sh (or `make install`)")
    # Every service bound to 127.0.0.1 only: nothing here is for other machines.
    return [
        binary, "--silent", "--location", str(cfg.azurite_dir),
        "--skipApiVersionCheck", "--loose", "--disableTelemetry",
        "--blobHost", "127.0.0.1", "--blobPort", str(cfg.blob_port),
        "--queueHost", "127.0.0.1", "--queuePort", str(cfg.queue_port),
        "--tableHost", "127.0.0.1", "--tablePort", str(cfg.table_port),
    ]  # fmt: skip


def registry_command(cfg: StackConfig) -> list[str]:
    binary = shutil.which("docker-registry") or shutil.which("registry")
    if binary is None:
        raise StackError("docker-registry is not installed; run scripts/install.sh (or `make install`)")
    return [binary, "serve", str(cfg.registry_config)]


def host_command(cfg: StackConfig) -> list[str]:
    return [sys.executable, "-m", "devhost", "--port", str(cfg.host_port)]


def host_available() -> bool:
    return (PROJECT / "devhost" / "__main__.py").exists()


def up(
    cfg: StackConfig,
    with_host: bool = True,
    system_trust: bool = True,
    timeout: float | None = None,
    reload_host: bool = False,
) -> None:
    with _locked(cfg):
        _up(cfg, with_host, system_trust, timeout, reload_host)


def _start_part(
    cfg: StackConfig, part: str, argv: list[str], env: dict[str, str], timeout: float | None
) -> None:
    limit = timeout or READY_TIMEOUT[part]
    pid = running_pid(cfg, part)
    if pid is not None:
        _say(f"{part}: already running (pid {pid})")
        _wait_ready(cfg, part, lambda: READY[part](cfg), None, limit)
        return
    stale = read_pid(cfg, part)
    if stale is not None:
        _say(f"{part}: pid file named pid {stale}, which is not ours any more; starting anew")
        pid_file(cfg, part).unlink(missing_ok=True)
    busy = [p for p in _part_ports(cfg, part) if port_open(p)]
    if busy:
        names = ", ".join(str(p) for p in busy)
        raise StackError(
            f"{part}: port {names} is already in use by a process this stack ({cfg.stack_dir}) did not "
            "start. Stop it, or choose other ports (AZURITE_*_PORT, REGISTRY_PORT, HOST_PORT or flags)."
        )
    _say(f"{part}: starting…")
    proc = _spawn(cfg, part, argv, env, PROJECT)
    _wait_ready(cfg, part, lambda: READY[part](cfg), proc, limit)
    _say(f"{part}: ready (pid {proc.pid})")


def _up(
    cfg: StackConfig, with_host: bool, system_trust: bool, timeout: float | None, reload_host: bool
) -> None:
    for d in (cfg.logs_dir, cfg.pids_dir, cfg.azurite_dir, cfg.registry_dir / "data", cfg.work_dir):
        d.mkdir(parents=True, exist_ok=True)
    key = function_key(cfg, create=True)
    assert key
    secret_key(cfg, create=True)
    for made in ensure_certificates(cfg):
        _say(f"registry: made {made}")

    state = _read_state(cfg)
    trusted: list[str] = []
    if system_trust:
        trusted = _register_system_trust(cfg)
    state.update(
        {
            "ports": cfg.ports(),
            "system_trust": sorted(set(state.get("system_trust", [])) | set(trusted)),
        }
    )
    _write_if_changed(cfg.state_file, json.dumps(state, indent=2) + "\n")

    changed = _write_if_changed(cfg.registry_config, registry_config_text(cfg, key))
    if changed and running_pid(cfg, "registry"):
        _say("registry: WARNING config.yml changed while the registry runs; `down` then `up` to apply it")

    base_env = dict(os.environ)
    # docker-registry reads REGISTRY_<SECTION>_<KEY> variables as overrides of config.yml; ours
    # (REGISTRY_PORT, REGISTRY_CERT_DIR from `env`) must not be taken for such.
    registry_env = {k: v for k, v in base_env.items() if not k.startswith("REGISTRY_")}
    _start_part(cfg, "azurite", azurite_command(cfg), base_env, timeout)
    _start_part(cfg, "registry", registry_command(cfg), registry_env, timeout)
    if not with_host:
        _say("host: not started (--no-host)")
    elif not host_available():
        _say("host: skipped (devhost/__main__.py does not exist yet)")
    else:
        # A running host keeps serving the code it imported at its start.
        pid = running_pid(cfg, "host")
        stale_file = host_code_changed(pid) if pid else None
        if stale_file and reload_host:
            _say(f"host: {stale_file} changed since the host started; restarting it")
            _stop_part(cfg, "host")
        elif stale_file:
            _say(
                f"host: WARNING {stale_file} changed since the host started, which still serves the old "
                "code; `stack.py up --reload-host` restarts it"
            )
        _start_part(cfg, "host", host_command(cfg), host_environment(cfg, key), timeout)
        # Functions the host could not serve (a missing setting, an import error) show up here.
        for name, error in ((host_status(cfg) or {}).get("errors") or {}).items():
            _say(f"host: WARNING function {name} is not served: {error}")

    _say("")
    _say(f"stack is up (STACK_DIR={cfg.stack_dir})")
    _say(f"  Azurite blob    {cfg.azurite_url('blob')}")
    _say(f"  Azurite queue   {cfg.azurite_url('queue')}")
    _say(f"  Azurite table   {cfg.azurite_url('table')}")
    _say(f"  registry        https://{cfg.registry}  CA {cfg.ca_cert}")
    _say(f"                  buildah/skopeo: --cert-dir {cfg.cert_dir}")
    if trusted:
        _say(
            f"                  CA also registered in {SYSTEM_CERTS_D}/{cfg.registry}/ (no --cert-dir needed)"
        )
    elif system_trust:
        _say(f"                  {SYSTEM_CERTS_D} not writable: pass --cert-dir to buildah/skopeo")
    host_state = "running" if running_pid(cfg, "host") else "not running"
    _say(f"  Functions host  {cfg.host_url}/api ({host_state}); webhook {cfg.webhook_url}")
    _say(f"  function key    {cfg.key_file}")
    _say(f"  logs            {cfg.logs_dir}/<part>.log")
    env_cmd = "python3 scripts/stack.py env"
    if cfg.stack_dir != default_stack_dir({}):
        env_cmd = f"STACK_DIR={shlex.quote(str(cfg.stack_dir))} " + env_cmd
    _say(f'to use it from a shell:  eval "$({env_cmd})"')


def _stop_part(cfg: StackConfig, part: str, timeout: float | None = None) -> None:
    pid = read_pid(cfg, part)
    if pid is None:
        _say(f"{part}: not running")
        return
    if not is_ours(cfg, part, pid):
        # Never signal a process we cannot prove is ours: pids get reused.
        why = "has exited" if not _proc_alive(pid) else "now belongs to another program"
        _say(f"{part}: pid {pid} {why}; left alone, stale pid file removed")
        pid_file(cfg, part).unlink(missing_ok=True)
        return
    killed = _terminate(pid, timeout or STOP_TIMEOUT[part])
    pid_file(cfg, part).unlink(missing_ok=True)
    _say(f"{part}: stopped (pid {pid}{', needed SIGKILL' if killed else ''})")


def down(cfg: StackConfig, timeout: float | None = None) -> None:
    with _locked(cfg):
        for part in reversed(PARTS):
            _stop_part(cfg, part, timeout)
        state = _read_state(cfg)
        removed = _unregister_system_trust(cfg, state.get("system_trust", []))
        if removed:
            _say(f"registry: removed the CA from {', '.join(str(Path(r).parent) for r in removed)}")
        if "system_trust" in state:
            state["system_trust"] = []
            _write_if_changed(cfg.state_file, json.dumps(state, indent=2) + "\n")


def status(cfg: StackConfig) -> dict[str, str]:
    """part -> "running" | "running, not answering" | "stopped" | "skipped" (printed by the command)."""
    result = {}
    for part in PARTS:
        pid = running_pid(cfg, part)
        if pid is None:
            result[part] = "skipped" if part == "host" and not host_available() else "stopped"
        elif READY[part](cfg):
            result[part] = "running"
        else:
            result[part] = "running, not answering"
    return result


def _print_status(cfg: StackConfig) -> int:
    where = {
        "azurite": f"{cfg.azurite_url('blob')} {cfg.azurite_url('queue')} {cfg.azurite_url('table')}",
        "registry": f"https://{cfg.registry}",
        "host": cfg.host_url,
    }
    states = status(cfg)
    _say(f"STACK_DIR={cfg.stack_dir}")
    for part, state in states.items():
        pid = running_pid(cfg, part)
        detail = f"pid {pid}, {where[part]}" if pid else where[part]
        if state == "skipped":
            detail = "devhost/__main__.py does not exist yet"
        _say(f"  {part:<9} {state:<24} {detail}")
    # Like an init script's status: 0 when every part that can run does, 3 otherwise.
    return 0 if all(s in ("running", "skipped") for s in states.values()) else 3


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--stack-dir", help="state folder (env STACK_DIR, default <project>/.stack)")
    for name in PORT_DEFAULTS:
        common.add_argument(
            "--" + name.lower().replace("_", "-"),
            dest=name.lower(),
            type=int,
            metavar="PORT",
            help=f"env {name}, default {PORT_DEFAULTS[name]}",
        )
    p = argparse.ArgumentParser(
        prog="stack.py",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    u = sub.add_parser("up", parents=[common], help="start the stack (what is not running yet)")
    u.add_argument("--no-host", action="store_true", help="do not start the local Functions host")
    u.add_argument(
        "--no-system-trust",
        action="store_true",
        help=f"do not copy the CA into {SYSTEM_CERTS_D} (also: STACK_SYSTEM_TRUST=0)",
    )
    u.add_argument("--timeout", type=float, help="seconds each part may take to become ready")
    u.add_argument(
        "--reload-host",
        action="store_true",
        help="restart a running host whose code (function_app.py, functions/, shared/, devhost/) changed",
    )
    sub.add_parser("down", parents=[common], help="stop what `up` started")
    sub.add_parser("status", parents=[common], help="show each part running/stopped (exit 3 if not all run)")
    sub.add_parser("env", parents=[common], help="print `export K=V` lines for the stack")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg = load_config(args.stack_dir, **{n.lower(): getattr(args, n.lower()) for n in PORT_DEFAULTS})
        if args.command == "up":
            system_trust = not args.no_system_trust and os.environ.get("STACK_SYSTEM_TRUST", "1") != "0"
            up(
                cfg,
                with_host=not args.no_host,
                system_trust=system_trust,
                timeout=args.timeout,
                reload_host=args.reload_host,
            )
        elif args.command == "down":
            down(cfg)
        elif args.command == "status":
            return _print_status(cfg)
        elif args.command == "env":
            for k, v in env_for(cfg).items():
                print(f"export {k}={shlex.quote(v)}")
    except StackError as exc:
        print(f"stack.py: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `stack.py env | head`: the reader left; nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
