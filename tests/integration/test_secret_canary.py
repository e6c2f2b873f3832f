"""A secret canary: unique secrets (one line, a multi-line PEM-like key, a git token) are planted in
two tasks, real builds print them (`echo`, and through `base64`), and then every place basetrigger
writes to is searched for every form of every secret: each table entity, blob and queue message of
the storage account (every prefix, not only ours), the host's log and the stack's logs, the work
folder, and each answer the API gave. The count of hits must be zero.

The builds run on a Functions host of this checkout with a table prefix and queue of its own
(tests/own_host.py): never on the stack's shared host, whose tables others use.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import secrets
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient

from shared.bootstrap import Services
from shared.domain.vocabulary import TERMINAL
from tests.chaos.figures import record
from tests.conftest import azurite_connection_string, unique_settings
from tests.integration.buildah_tools import push_base
from tests.own_host import OwnHost, free_port, own_host

MIN_FORM = 16  # shorter pieces (a base64 tail like `Cg==`) say nothing and match by chance
MAX_BLOB = 32 * 1024 * 1024


def _canary(kind: str) -> str:
    return f"{kind}-{secrets.token_hex(12)}"


ONE_LINE = _canary("canary1")
PEM = "\n".join(
    [
        f"-----BEGIN {_canary('CANARY')} PRIVATE KEY-----",
        *(base64.b64encode(secrets.token_bytes(48)).decode() for _ in range(3)),
        f"-----END {_canary('CANARY')} PRIVATE KEY-----",
    ]
)
GIT_TOKEN = "ghp_" + secrets.token_hex(18)
# Signs the run notifications of the directory task (whose endpoint is a closed port: each one fails
# and is recorded, so the failure's decisions and logs are searched too).
NOTIFY_SECRET = _canary("canary2")
SECRETS = {"one-line": ONE_LINE, "multi-line": PEM, "git token": GIT_TOKEN,
           "notification secret": NOTIFY_SECRET}


def _base64_cores(raw: bytes) -> set[str]:
    """What base64 of any text holding `raw` contains, whatever the bytes before it: for each of the
    three alignments, the characters that depend on `raw` alone."""
    cores = set()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw).decode()
        start = 4 if offset else 0
        end = len(encoded) - 4  # the last group may mix in what follows
        cores.add(encoded[start:end])
        cores.add(base64.urlsafe_b64encode(b"\0" * offset + raw).decode()[start:end])
    return cores


def forms(secret: str) -> dict[str, str]:
    """Every way a secret could show: whole, line by line, JSON-escaped, URL-encoded, and base64
    (whole, as `base64` wraps it at 76 characters, and at any alignment inside other data)."""
    found = {"plain": secret, "json": json.dumps(secret)[1:-1], "url": requests.utils.quote(secret, safe="")}
    for n, line in enumerate(secret.splitlines()):
        found[f"line {n}"] = line
    for raw, label in ((secret.encode(), "b64"), ((secret + "\n").encode(), "b64+nl")):
        encoded = base64.b64encode(raw).decode()
        found[label] = encoded
        for n in range(0, len(encoded), 76):
            found[f"{label} line {n // 76}"] = encoded[n : n + 76]
        for n, core in enumerate(sorted(_base64_cores(raw))):
            found[f"{label} core {n}"] = core
    return {name: form for name, form in found.items() if len(form) >= MIN_FORM}


def search(haystacks: dict[str, str]) -> list[str]:
    """`where: secret (form)` for each hit; base64 is also looked for with the line breaks taken out."""
    hits = []
    for secret_name, secret in SECRETS.items():
        for form_name, form in forms(secret).items():
            for where, text in haystacks.items():
                flat = text.replace("\r", "").replace("\n", "") if "b64" in form_name else text
                if form in text or form in flat:
                    hits.append(f"{where}: {secret_name} ({form_name})")
    return hits


# ---- where to look --------------------------------------------------------------------------------
def table_entities(connection: str) -> dict[str, str]:
    service = TableServiceClient.from_connection_string(connection)
    found = {}
    for table in service.list_tables():
        try:
            for entity in service.get_table_client(table.name).list_entities():
                key = f"table {table.name} {entity.get('PartitionKey')}/{entity.get('RowKey')}"
                found[key] = json.dumps(dict(entity), default=str, ensure_ascii=False)
        except ResourceNotFoundError:
            continue  # deleted by another test meanwhile
    return found


def _readable(data: bytes) -> str:
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError):
            pass
    return data.decode("utf-8", "replace")


def blobs(connection: str) -> dict[str, str]:
    service = BlobServiceClient.from_connection_string(connection)
    found = {}
    for container in service.list_containers():
        client = service.get_container_client(container.name)
        try:
            for blob in client.list_blobs():
                if blob.size <= MAX_BLOB:
                    found[f"blob {container.name}/{blob.name}"] = _readable(
                        client.download_blob(blob.name).readall()
                    )
        except ResourceNotFoundError:
            continue
    return found


def queue_messages(connection: str) -> dict[str, str]:
    service = QueueServiceClient.from_connection_string(connection)
    found = {}
    for queue in service.list_queues():
        try:
            for message in service.get_queue_client(queue.name).peek_messages(max_messages=32):
                text = message.content or ""
                try:
                    text += "\n" + base64.b64decode(text, validate=True).decode("utf-8", "replace")
                except ValueError:
                    pass
                found[f"queue {queue.name} {message.id}"] = text
        except ResourceNotFoundError:
            continue
    return found


def files(*folders: Path) -> dict[str, str]:
    found = {}
    for folder in folders:
        if not folder.exists():
            continue
        for path in [folder] if folder.is_file() else folder.rglob("*"):
            if path.is_file() and not path.is_symlink():
                with path.open("rb") as handle:
                    size = path.stat().st_size
                    handle.seek(max(0, size - MAX_BLOB))
                    found[f"file {path}"] = _readable(handle.read())
    return found


# ---- the run ----------------------------------------------------------------------------------------
class RecordingApi:
    """The API through our own host, keeping every answer (status line, headers, body)."""

    def __init__(self, host: OwnHost):
        self.host = host
        self.session = host.api()
        self.answers: dict[str, str] = {}

    def __call__(self, method: str, path: str, **kwargs) -> requests.Response:
        answer = self.session.request(method, f"{self.host.url}/api{path}", timeout=60, **kwargs)
        self.answers[f"answer {len(self.answers)} {method} {path}"] = (
            f"{answer.status_code}\n{dict(answer.headers)}\n{answer.text}"
        )
        return answer


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), *args],
        check=True,
        capture_output=True,
        env=dict(
            os.environ,
            GIT_AUTHOR_NAME="t",
            GIT_AUTHOR_EMAIL="t@e",
            GIT_COMMITTER_NAME="t",
            GIT_COMMITTER_EMAIL="t@e",
        ),
    )


# Secret args are build secrets: files in /run/secrets (without a final newline).
PRINTS_SECRETS = """\
FROM {base}
RUN --mount=type=secret,id=ONE cd /run/secrets; cat ONE; echo; {{ cat ONE; echo; }} | base64; base64 ONE
RUN --mount=type=secret,id=ONE --mount=type=secret,id=PEM cd /run/secrets; cat PEM; echo; \\
    {{ cat PEM; echo; }} | base64; base64 PEM; echo "one=$(cat ONE) pem=$(cat PEM)"
"""


@pytest.fixture(scope="module")
def canary_host(tmp_path_factory) -> Iterator[tuple[OwnHost, Path, Services]]:
    settings = unique_settings()
    folder = Path(tmp_path_factory.mktemp("canary"))
    log, work = folder / "host.log", folder / "work"
    with own_host(
        log,
        BASETRIGGER_TABLE_PREFIX=settings.table_prefix,
        BASETRIGGER_BUILD_QUEUE=settings.build_queue,
        BASETRIGGER_WORK_DIR=str(work),
    ) as host:
        yield host, log, Services(settings)
    Services(settings).storage.drop_all()


def wait_terminal(api: RecordingApi, run_id: str, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = api("GET", f"/runs/{run_id}").json()
        if run["status"] in TERMINAL:
            return run
        time.sleep(1)
    raise AssertionError(f"run {run_id} did not finish within {timeout}s: {run}")


def test_planted_secrets_appear_nowhere_after_real_builds(canary_host, tmp_path):
    host, log, services = canary_host
    api = RecordingApi(host)
    registry = os.environ["REGISTRY"]
    name = f"canary{uuid.uuid4().hex[:8]}"
    base = f"{registry}/{name}/base:1"
    push_base(tmp_path, base, "c1")

    folder = tmp_path / "ctx"
    folder.mkdir()
    (folder / "Dockerfile").write_text(PRINTS_SECRETS.format(base=base))
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "Dockerfile").write_text(PRINTS_SECRETS.format(base=base))
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "app")

    tasks = {
        f"{name}-dir": {"context": str(folder), "secret_args": {"ONE": ONE_LINE, "PEM": PEM},
                        "update_trigger_endpoint": f"http://127.0.0.1:{free_port()}/hook",
                        "update_trigger_secret": NOTIFY_SECRET},
        f"{name}-git": {
            "context": f"file://{repo}",
            "branch": "main",
            "git_access_token": GIT_TOKEN,
            "secret_args": {"ONE": ONE_LINE, "PEM": PEM},
        },
    }
    runs = []
    for task, fields in tasks.items():
        created = api(
            "POST", "/tasks", json={"name": task, "images": [f"{name}/{task}:{{{{.Run.ID}}}}"], **fields}
        )
        assert created.status_code == 201, created.text
        runs.append(api("POST", f"/tasks/{task}/runs", json={}).json()["run_id"])
    finished = [wait_terminal(api, run_id) for run_id in runs]
    assert [r["status"] for r in finished] == ["Succeeded", "Succeeded"], finished

    # The logs did print something for every secret (masked), so the search below is not vacuous.
    for run_id in runs:
        text = api("GET", f"/runs/{run_id}/log").text
        assert text.count("***") >= 6, text
    # Every read the API offers, on these tasks and runs.
    task = next(iter(tasks))
    for path in (
        "/tasks",
        f"/tasks/{task}",
        f"/tasks/{name}-git",
        "/runs",
        f"/runs?task={task}",
        "/decisions",
        "/graph",
        "/stale",
        f"/tasks/{task}/decisions",
        "/bases",
        "/waves",
        f"/bases/{requests.utils.quote(base, safe='')}/impact",
        f"/tasks/{task}/credentials",
        *(f"/runs/{run_id}" for run_id in runs),
        *(f"/runs/{run_id}/log" for run_id in runs),
    ):
        api("GET", path)
    api("PATCH", f"/tasks/{task}", json={"build_args": {"PLAIN": "value"}})
    api("POST", "/secrets/rotate")

    connection = azurite_connection_string()
    stack_logs = Path(os.environ.get("STACK_DIR", ".stack")) / "logs"
    haystacks = {
        **table_entities(connection),
        **blobs(connection),
        **queue_messages(connection),
        **files(log, stack_logs, Path(host.env["BASETRIGGER_WORK_DIR"])),
        **api.answers,
    }
    ours = [k for k in haystacks if services.settings.table_prefix in k or k.startswith(("answer", "file"))]
    assert any(k.startswith("blob") and runs[0] in k for k in haystacks), "the run logs were not searched"
    assert len(ours) > 20, sorted(haystacks)
    hits = search(haystacks)
    record(
        "secret canary",
        runs=len(runs),
        requests=len(api.answers),
        secret_hits=len(hits),
        examples=len(haystacks),
    )
    assert not hits, hits


def test_the_search_finds_what_it_is_looking_for():
    """The canary's own check: each form is found where it is planted (so zero hits means something)."""
    planted = {
        "plain": f"x {ONE_LINE} y",
        "pem line": "log line: " + PEM.splitlines()[2],
        "json": json.dumps({"secret": PEM}),
        "wrapped base64": "\n".join(base64.encodebytes((PEM + "\n").encode()).decode().split("\n")),
        "embedded base64": base64.b64encode(b"prefix-" + GIT_TOKEN.encode() + b"-suffix").decode(),
        "queue": base64.b64encode(json.dumps({"token": ONE_LINE}).encode()).decode(),
    }
    for where, text in planted.items():
        assert search({where: text}), where
    assert not search({"masked": "token is ***", "other": secrets.token_hex(64)})
