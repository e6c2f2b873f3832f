"""A second local stack for fault tests: its own STACK_DIR and free ports for every part, started
with scripts/stack.py (docs/local-stack.md, "A second stack") and stopped with it afterwards.

The shared default stack is never touched: faults (a killed host, a stopped Azurite or registry)
are applied to this stack's processes only, found by the pid files its `up` wrote.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import requests

from shared import config
from shared.bootstrap import Services

ROOT = Path(__file__).resolve().parents[2]
STACK_PY = ROOT / "scripts" / "stack.py"
# What ties a process to a stack: none of the default stack's settings may leak into this one.
_STACK_VARIABLES = ("AzureWebJobsStorage", "STACK_DIR", "REGISTRY", "REGISTRY_CERT_DIR", "DEVHOST_KEY")


def _stack_module() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("bt_chaos_stack_script", STACK_PY)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


class SecondStack:
    def __init__(self, folder: Path, ports: dict[str, int] | None = None):
        self.folder = folder
        self.ports = ports or {}

    @classmethod
    def on_free_ports(cls, folder: Path) -> SecondStack:
        names = list(_stack_module().PORT_DEFAULTS)
        return cls(folder, dict(zip(names, free_ports(len(names)), strict=True)))

    # ---- running scripts/stack.py --------------------------------------------------------------
    def command_env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in _STACK_VARIABLES and not k.startswith("BASETRIGGER_") and not k.endswith("_PORT")
        }
        env.update(
            {
                "STACK_DIR": str(self.folder),
                "STACK_SYSTEM_TRUST": os.environ.get("STACK_SYSTEM_TRUST", "1"),
                **{k: str(v) for k, v in self.ports.items()},
            }
        )
        return env

    def stack(self, *args: str, timeout: float = 180) -> str:
        result = subprocess.run(
            [sys.executable, str(STACK_PY), *args],
            cwd=ROOT,
            env=self.command_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"stack.py {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result.stdout

    def up(self) -> None:
        self.stack("up")

    def down(self) -> None:
        self.stack("down", timeout=300)

    def env(self) -> dict[str, str]:
        """What a client of this stack needs (`stack.py env`), as a dict."""
        values = {}
        for line in self.stack("env").splitlines():
            if line.startswith("export "):
                key, _, value = line[len("export ") :].partition("=")
                values[key] = shlex.split(value)[0] if value else ""
        return values

    # ---- its parts ---------------------------------------------------------------------------------
    def pid(self, part: str) -> int | None:
        try:
            return int((self.folder / "pids" / f"{part}.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def stop(self, part: str, sig: int = signal.SIGKILL, timeout: float = 30) -> None:
        """Signal one part of this stack (by the pid its own `up` recorded) and wait until it is gone."""
        pid = self.pid(part)
        assert pid is not None, f"{part} of {self.folder} has no pid file"
        environ = Path(f"/proc/{pid}/environ")
        assert f"BASETRIGGER_STACK_DIR={self.folder}".encode() in environ.read_bytes(), (
            f"pid {pid} is not this stack's {part}"
        )
        os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            try:
                if (Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]) == "Z":
                    break  # a zombie: gone for our purposes
            except OSError:
                break
            time.sleep(0.1)

    @property
    def host_log(self) -> Path:
        return self.folder / "logs" / "host.log"

    def services(self) -> Services:
        """The tables and queue of this stack's host (the default prefix)."""
        env = self.env()
        return Services(config.load({**env, "BASETRIGGER_REGISTRY": env["REGISTRY"]}))

    def api(self) -> requests.Session:
        env = self.env()
        session = requests.Session()
        session.trust_env = False
        session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=64))  # bursts use many at once
        session.headers["x-functions-key"] = env["BASETRIGGER_KEY"]
        return session

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['HOST_PORT']}" if self.ports else self.env()["BASETRIGGER_URL"]
