"""A small client of the basetrigger HTTP API (docs/api.md), and following a run to its end.

Configured by `--url` / `--key` (every command that calls the API takes them, see
`connection_options`) or the environment variables BASETRIGGER_URL / BASETRIGGER_KEY. The key is
sent in the `x-functions-key` header and never printed: it appears in no message, no repr and no URL.

Every failure becomes one `ApiError` whose message is a whole sentence for the user: the API's own
`{"error": {"code", "message"}}`, "cannot reach basetrigger at URL: is the stack up? (`make up`)",
a refused key, a timeout.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlsplit

import requests

from cli.output import format_duration
from shared.domain.vocabulary import TERMINAL, RunStatus

URL_ENV = "BASETRIGGER_URL"
KEY_ENV = "BASETRIGGER_KEY"

# Exit statuses of the commands.
EXIT_OK = 0
EXIT_RUN_FAILED = 1  # the run ended, but not Succeeded
EXIT_ERROR = 2  # the request could not be made or was refused
EXIT_INTERRUPTED = 130


class ApiError(Exception):
    """A request that did not succeed; str() is the one line to show the user."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


def connection_options() -> argparse.ArgumentParser:
    """A parent parser with --url/--key, for `add_parser(..., parents=[connection_options()])`."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("connection")
    group.add_argument(
        "--url",
        default=None,
        help=f"the basetrigger Functions app, e.g. http://127.0.0.1:7071 (default: ${URL_ENV})",
    )
    group.add_argument("--key", default=None, help=f"the function key (default: ${KEY_ENV})")
    return parent


def _base_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if url.endswith("/api"):
        url = url[: -len("/api")]
    if not url.startswith(("http://", "https://")):
        url = f"http://{url}"
    return url


def local_path(value: str) -> Path:
    """A path the user typed, with `~` expanded; ApiError (one line) for `~nobody/x` and the like."""
    try:
        return Path(value).expanduser()
    except RuntimeError as exc:
        raise ApiError(f"{value!r}: {exc}") from None


class Client:
    def __init__(self, url: str, key: str | None = None, timeout: float = 60.0,
                 session: requests.Session | None = None):
        self.url = _base_url(url)
        try:
            host = urlsplit(self.url).hostname
        except ValueError as exc:  # `http://[::1`
            raise ApiError(f"--url {url!r} is not a URL: {exc}") from None
        if key and not key.isascii():  # an HTTP header carries it: requests would fail to encode it
            raise ApiError("the key has characters a function key never has (it is ASCII)")
        self._key = key or None
        self.timeout = timeout
        self.session = session or requests.Session()
        if host in ("127.0.0.1", "localhost", "::1"):
            # An http(s)_proxy in the environment must not capture requests to this machine.
            self.session.trust_env = False

    def __repr__(self) -> str:  # never the key
        return f"Client({self.url!r})"

    @classmethod
    def from_args(cls, args: argparse.Namespace | None = None,
                  env: Mapping[str, str] | None = None) -> Client:
        environ: Mapping[str, str] = os.environ if env is None else env
        url = getattr(args, "url", None) or environ.get(URL_ENV)
        key = getattr(args, "key", None) or environ.get(KEY_ENV)
        if not url:
            raise ApiError(
                f"no basetrigger URL: pass --url or set {URL_ENV} "
                '(for the local stack: eval "$(python3 scripts/stack.py env)")'
            )
        return cls(url, key)

    # ---- transport -------------------------------------------------------------------------
    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                body: Any = None, timeout: float | None = None,
                headers: dict[str, str] | None = None) -> requests.Response:
        headers = {"accept": "application/json", **(headers or {})}
        if self._key:
            headers["x-functions-key"] = self._key
        params = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self.session.request(
                method, f"{self.url}/api/{path.lstrip('/')}", params=params, json=body,
                headers=headers, timeout=timeout or self.timeout,
            )
        except requests.ConnectionError as exc:
            if isinstance(exc, requests.exceptions.SSLError):
                raise ApiError(f"TLS error talking to basetrigger at {self.url}: {exc}") from None
            raise ApiError(f"cannot reach basetrigger at {self.url}: is the stack up? (`make up`)") from None
        except requests.Timeout:
            raise ApiError(
                f"basetrigger at {self.url} did not answer {method} /api/{path.lstrip('/')} "
                f"within {timeout or self.timeout:g}s"
            ) from None
        except requests.RequestException as exc:
            raise ApiError(f"request to basetrigger at {self.url} failed: {exc}") from None
        if response.status_code >= 400:
            raise self._error(method, path, response)
        return response

    def _error(self, method: str, path: str, response: requests.Response) -> ApiError:
        status = response.status_code
        code = message = None
        try:
            error = response.json().get("error")
            if isinstance(error, dict):
                code, message = error.get("code"), error.get("message")
            elif isinstance(error, str):
                message = error
        except (ValueError, AttributeError):
            pass
        if status == 401 and not message:
            message = "the function key was refused"
        if status == 401:
            hint = f"pass --key or set {KEY_ENV}" if not self._key else f"check --key / {KEY_ENV}"
            return ApiError(f"{message} (HTTP 401): {hint}", status, code)
        if not message:
            text = " ".join(response.text.split())[:200]
            message = f"HTTP {status} from {method} /api/{path.lstrip('/')}" + (f": {text}" if text else "")
        return ApiError(message, status, code)

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ApiError(
                f"basetrigger answered {method} /api/{path.lstrip('/')} with something that is not JSON"
            ) from None

    def _object(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """The answer as a JSON object; ApiError when it is none (an empty answer, a list, a string)."""
        data = self._json(method, path, **kwargs)
        if not isinstance(data, dict):
            raise ApiError(f"basetrigger answered {method} /api/{path.lstrip('/')} without a JSON object")
        return data

    def _items(self, key: str, method: str, path: str, **kwargs: Any) -> list[dict[str, Any]]:
        """The list under `key` of the answer's JSON object; ApiError when there is none."""
        items = self._object(method, path, **kwargs).get(key)
        if not isinstance(items, list):
            raise ApiError(f"basetrigger answered {method} /api/{path.lstrip('/')} without {key!r}")
        return items

    # ---- tasks -----------------------------------------------------------------------------
    def list_tasks(self) -> list[dict[str, Any]]:
        return self._items("tasks", "GET", "tasks")

    def get_task(self, name: str) -> dict[str, Any]:
        return self._object("GET", f"tasks/{quote(name, safe='')}")

    def task_version(self, name: str) -> str | None:
        """The task's version now: its ETag, to send back as If-Match."""
        return self.request("GET", f"tasks/{quote(name, safe='')}").headers.get("ETag")

    def create_task(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self._object("POST", "tasks", body=spec)

    def update_task(self, name: str, changes: dict[str, Any], if_match: str | None = None) -> dict[str, Any]:
        """With `if_match` (an ETag), only if the task is still at that version (else ApiError 412)."""
        return self._object("PATCH", f"tasks/{quote(name, safe='')}", body=changes,
                          headers={"If-Match": if_match} if if_match else None)

    def delete_task(self, name: str, if_match: str | None = None) -> None:
        self._json("DELETE", f"tasks/{quote(name, safe='')}",
                   headers={"If-Match": if_match} if if_match else None)

    def run_task(self, name: str, force: bool = False) -> dict[str, Any]:
        return self._object("POST", f"tasks/{quote(name, safe='')}/runs", body={"force": force})

    # ---- builds and runs -------------------------------------------------------------------
    def quick_build(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self._object("POST", "builds", body=spec, timeout=max(self.timeout, 300.0))

    def list_runs(self, top: int | None = None, task: str | None = None, status: str | None = None,
                  image: str | None = None, continuation: str | None = None) -> dict[str, Any]:
        return self._object("GET", "runs", params={"top": top, "task": task, "status": status,
                                                 "image": image, "continuation": continuation})

    def get_run(self, run_id: str) -> dict[str, Any]:
        return self._object("GET", f"runs/{quote(run_id, safe='')}")

    def cancel_run(self, run_id: str) -> dict[str, Any]:
        return self._object("POST", f"runs/{quote(run_id, safe='')}/cancel")

    def read_log(self, run_id: str, offset: int = 0) -> tuple[bytes, int, str | None]:
        """The log from `offset`: (bytes, next offset, the run's status when it was read)."""
        response = self.request("GET", f"runs/{quote(run_id, safe='')}/log", params={"offset": offset})
        data = response.content
        try:
            next_offset = int(response.headers.get("x-log-offset", ""))
        except ValueError:
            next_offset = offset + len(data)
        return data, next_offset, response.headers.get("x-run-status")

    def decisions(self, top: int | None = None, image: str | None = None) -> list[dict[str, Any]]:
        return self._items("decisions", "GET", "decisions", params={"top": top, "image": image})

    # ---- insight (functions/insight_api.py) ------------------------------------------------
    def waves(self, top: int | None = None) -> list[dict[str, Any]]:
        return self._items("waves", "GET", "waves", params={"top": top})

    def wave(self, wave_id: str, action: str | None = None) -> dict[str, Any]:
        """A wave; with `action` (cancel, resume), that done first."""
        path = f"waves/{quote(wave_id, safe='')}" + (f"/{action}" if action else "")
        return self._object("POST" if action else "GET", path)

    def rebuild_base(self, image: str) -> dict[str, Any]:
        return self._object("POST", "bases/rebuild", body={"image": image})

    def task_decisions(self, name: str, top: int | None = None) -> list[dict[str, Any]]:
        return self._items("decisions", "GET", f"tasks/{quote(name, safe='')}/decisions", params={"top": top})

    def base_changes(self, image: str, old: str | None = None, new: str | None = None) -> dict[str, Any]:
        # Layers are read from the registry: it may take longer than other questions.
        return self._object("GET", "bases/changes", params={"image": image, "from": old, "to": new},
                          timeout=max(self.timeout, 150.0))

    def quarantine(self, target: str, reason: str, rollback: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {"image": target, "reason": reason}
        if rollback:  # it reads and writes the registry: it may take longer than other requests
            body["rollback"] = True
            return self._object("POST", "bases/quarantine", body=body, timeout=max(self.timeout, 120.0))
        return self._object("POST", "bases/quarantine", body=body)

    def release(self, target: str) -> dict[str, Any]:
        return self._object("POST", "bases/release", body={"image": target})

    def latency(self, since: str | None = None, slo: str | None = None) -> dict[str, Any]:
        # It asks the registries for each base's digest (the dependents still on an old one).
        return self._object("GET", "bases/latency", params={"since": since, "slo": slo},
                            timeout=max(self.timeout, 120.0))

    def quarantined(self) -> list[dict[str, Any]]:
        return self._items("quarantine", "GET", "bases/quarantine")

    def settling(self) -> list[dict[str, Any]]:
        return self._items("bases", "GET", "bases/settling")

    def settle_now(self) -> list[dict[str, Any]]:
        return self._items("dispatched", "POST", "bases/settling")

    def base_impact(self, image: str) -> dict[str, Any]:
        # The reference has `/` in it: it travels percent-encoded in one path segment.
        return self._object("GET", f"bases/{quote(image, safe='')}/impact")

    def stale(self) -> dict[str, Any]:
        return self._object("GET", "stale", timeout=max(self.timeout, 120.0))

    def graph(self) -> dict[str, Any]:
        return self._object("GET", "graph")


def handles_errors(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Wrap a command: an ApiError is one `error: ...` line and EXIT_ERROR, Ctrl-C is EXIT_INTERRUPTED."""

    def command(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except ApiError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            return EXIT_ERROR
        except KeyboardInterrupt:
            print("\ninterrupted", file=sys.stderr)
            return EXIT_INTERRUPTED

    command.__name__ = func.__name__
    command.__doc__ = func.__doc__
    return command


def key_value(text: str) -> tuple[str, str]:
    """argparse type of `--arg K=V` / `--build-arg K=V`; `K` alone takes $K (as `docker build` does)."""
    key, has_value, value = text.partition("=")
    if not key:
        raise argparse.ArgumentTypeError(f"invalid argument {text!r}: expected KEY=VALUE")
    if not has_value:
        if key not in os.environ:
            raise argparse.ArgumentTypeError(
                f"{key!r} has no value and ${key} is not set: expected KEY=VALUE"
            )
        value = os.environ[key]
    return key, value


# --------------------------------------------------------------------------------------------------
# Following a run
# --------------------------------------------------------------------------------------------------


class Progress:
    """One status line on stderr: rewritten in place on a terminal, every `every` seconds otherwise."""

    def __init__(self, stream: IO[str] | None = None, every: float = 15.0):
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = every
        self._shown = False
        self._last_text = ""
        self._last_time = 0.0

    def show(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + text)
            self.stream.flush()
            self._shown = True
        else:
            now = time.monotonic()
            if not self._last_text or now - self._last_time >= self.every or (
                text.split("…")[0] != self._last_text.split("…")[0]
            ):
                self.stream.write(text + "\n")
                self.stream.flush()
                self._last_time = now
        self._last_text = text

    def clear(self) -> None:
        if self.tty and self._shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._shown = False
        self._last_text = ""


def follow_run(client: Client, run_id: str, *, out: IO[str] | None = None, err: IO[str] | None = None,
               interval: float = 1.0, timeout: float | None = None,
               sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Print the run's log as it grows until the run ends; returns the finished run.

    While the run is Queued, a progress line ("waiting for a worker… 12s") goes to stderr. The log
    is complete once the run is terminal, so after that the rest is read once more.
    """
    out = out or sys.stdout
    progress = Progress(err)
    offset = 0
    started = time.monotonic()
    status: str | None = None

    def emit(data: bytes) -> None:
        if data:
            progress.clear()
            out.write(data.decode("utf-8", errors="replace"))
            out.flush()

    while True:
        data, offset, status = client.read_log(run_id, offset)
        emit(data)
        if status is None:  # an API without the header: ask for the run itself
            status = client.get_run(run_id).get("status")
        if status in TERMINAL:
            break
        waited = int(time.monotonic() - started)
        if status == RunStatus.QUEUED:
            progress.show(f"waiting for a worker… {waited}s")
        elif not data:
            progress.show(f"run {run_id} {status or 'Running'}… {waited}s")
        if timeout is not None and waited > timeout:
            progress.clear()
            raise ApiError(f"run {run_id} did not end within {timeout:g}s (it is still {status})")
        sleep(interval)
    # The status and the log are read one after the other: take what was appended in between.
    while True:
        data, offset, _ = client.read_log(run_id, offset)
        if not data:
            break
        emit(data)
    progress.clear()
    return client.get_run(run_id)


def report_end(run: dict[str, Any], out: IO[str] | None = None, err: IO[str] | None = None) -> int:
    """The last line after following a run (as `az` prints it), and the exit status it means."""
    out = out or sys.stdout
    err = err or sys.stderr
    run_id, status = run.get("run_id"), run.get("status")
    duration = format_duration(run.get("duration_seconds"))
    if status == RunStatus.SUCCEEDED:
        print(f"Run ID: {run_id} was successful after {duration}", file=out)
        return EXIT_OK
    reason = run.get("reason") or "no reason recorded"
    print(f"run {run_id} {status}: {reason}", file=err)
    return EXIT_RUN_FAILED
