"""A Functions host of this checkout (`python -m devhost`) and a headless Chromium, for the browser
tests, the dashboard benchmark and `make screenshots`.

The stack's own host may run older code than the checkout (it is restarted only by `make test`), so
these start their own host on a free port, with the stack's settings (Azurite, registry CA, secret
key) and, unless told otherwise, the stack's tables. Chromium is Debian's (`/usr/bin/chromium`,
installed by scripts/install.sh); Playwright drives it and never downloads a browser of its own.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("BASETRIGGER_CHROMIUM", "/usr/bin/chromium")
# No network beyond this machine, no first-run work, no GPU: the same page every time.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OwnHost:
    def __init__(self, url: str, key: str, env: dict[str, str], process: subprocess.Popen[bytes]):
        self.url = url
        self.key = key
        self.env = env
        self.process = process

    @property
    def dashboard(self) -> str:
        return f"{self.url}/api/dashboard/"

    def api(self) -> requests.Session:
        session = requests.Session()
        session.trust_env = False
        session.headers["x-functions-key"] = self.key
        return session


@contextmanager
def own_host(log: Path, **settings: str) -> Iterator[OwnHost]:
    """A devhost of this checkout with the stack's environment plus `settings`; stopped afterwards."""
    if not os.environ.get("AzureWebJobsStorage"):
        raise RuntimeError("AzureWebJobsStorage is not set: start the stack (`make up`) and "
                           "`eval \"$(python3 scripts/stack.py env)\"`")
    key, port = secrets.token_urlsafe(16), free_port()
    env = dict(os.environ, DEVHOST_KEY=key, PYTHONUNBUFFERED="1", **settings)
    env.setdefault("BASETRIGGER_REGISTRY", env.get("REGISTRY", "localhost:5000"))
    with open(log, "ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "devhost", "--port", str(port)], cwd=ROOT,
                                   env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the host exited with {process.returncode}; see {log}")
            try:
                requests.get(f"{url}/admin/host/status", timeout=1, proxies={"http": "", "https": ""})
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the host did not answer within 60 s; see {log}") from None
                time.sleep(0.2)
        yield OwnHost(url, key, env, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@contextmanager
def chromium(width: int = 1440, height: int = 900) -> Iterator[Any]:
    """A Playwright BrowserContext on Debian's Chromium with a fresh profile (a laptop's screen)."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: scripts/install.sh installs Debian's chromium")
    # Playwright refuses --user-data-dir among the arguments: the profile folder is its own parameter.
    with tempfile.TemporaryDirectory(prefix="bt-chromium-") as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
            viewport={"width": width, "height": height})
        try:
            yield context
        finally:
            context.close()
