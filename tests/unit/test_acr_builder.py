"""The ACR builder, exercised through the management client's transport layer.

A real `ContainerRegistryTasksMgmtClient` (and real `BlobClient`s) send real HTTP requests into
`CannedTransport`, an azure-core `HttpTransport` that records each request and answers the way the
ACR REST API (api-version 2025-03-01-preview) and Blob Storage answer: the source-upload URL,
`scheduleRun` returning a Run, `runs/{id}` moving Queued -> Running -> Succeeded, `listLogSasUrl`,
and the log blob growing between polls. The assertions are on the serialized request bodies, so
they check the REST shapes, not our own model objects.

The blob side (source upload, log reads) goes through the same canned transport here; against a
real Azurite blob service it is tested in tests/integration/test_acr_builder_storage.py. No test
reaches Azure, and none here needs the local stack.
"""

from __future__ import annotations

import io
import json
import logging
import tarfile
import time
from email.utils import formatdate
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import urllib3
from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import RequestsTransport
from azure.mgmt.containerregistrytasks import ContainerRegistryTasksMgmtClient
from azure.storage.blob import BlobClient

from shared.adapters.builders.acr import AcrBuilder
from shared.domain.builds import BuildContext, BuildRequest
from shared.domain.credentials import RegistryCredential
from shared.domain.runs import Run as RunRecord
from shared.domain.vocabulary import RunStatus, Trigger

SUB = "00000000-1111-2222-3333-444444444444"
RG = "rg-images"
REGISTRY = "contosoacr"
ARM = "https://management.azure.com"
REGISTRY_PATH = (
    f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.ContainerRegistry/registries/{REGISTRY}"
)
OPERATION_PATH = (
    f"/subscriptions/{SUB}/providers/Microsoft.ContainerRegistry/locations/westeurope/operationResults/op1"
)
UPLOAD_BLOB = "https://acrsrc.blob.core.windows.net/f0e1d2c3/source/202611270000/ab12cd.tar.gz"
LOG_BLOB = "https://acrlogs.blob.core.windows.net/logs/cb7/rawtext.log"
SECRET = "s3cr3t-value"
DIGEST = "sha256:" + "ab" * 32


class StubCredential:
    """A TokenCredential that hands out a fixed token: the client needs one, nothing checks it."""

    def get_token(self, *scopes, **kwargs):
        return AccessToken("stub-token", int(time.time()) + 3600)


class FakeAcr:
    """ACR's management API and its two storage blobs, answering from canned JSON."""

    def __init__(
        self,
        statuses=("Queued", "Running", "Succeeded"),
        log_chunks=None,
        final=None,
        schedule_error=None,
        upload_url=UPLOAD_BLOB,
        log_url=LOG_BLOB,
        append_log=None,
        schedule_accepted=None,
        operation_polls=1,
        cancel_answer=(200, {}),
        cancel_takes=1,
    ):
        """`schedule_accepted`: None (scheduleRun answers 200 with the run), "run" (202 with the run),
        "location" (202, empty body, a Location polled `operation_polls` times before it names the run)
        or "nothing" (202, empty body, no Location). `cancel_answer`: the cancel's status and body;
        after an accepted cancel, `cancel_takes` gets still show the old status (None: never ends)."""
        self.statuses = list(statuses)
        self.log_chunks = list(log_chunks if log_chunks is not None else [])
        self.final = final or {}
        self.schedule_error = schedule_error
        self.upload_url = upload_url
        self.log_url = log_url
        # Where the "ACR agent" writes its log: the fake's own blob, or (Azurite test) a callback.
        self.append_log = append_log or self._append_own_log
        self.schedule_accepted = schedule_accepted
        self.operation_polls = operation_polls
        self.cancel_answer = cancel_answer
        self.cancel_takes = cancel_takes
        self.canceled_at: int | None = None  # the number of gets when the cancel was accepted
        self.requests: list[dict] = []
        self.blobs: dict[str, bytes] = {}
        self.gets = 0

    # -- recording ---------------------------------------------------------------------------------

    def calls(self, method: str, path_suffix: str) -> list[dict]:
        return [r for r in self.requests if r["method"] == method and r["path"].endswith(path_suffix)]

    # -- answering ---------------------------------------------------------------------------------

    def handle(self, method: str, url: str, headers: dict, body: bytes):
        parts = urlsplit(url)
        self.requests.append(
            {
                "method": method,
                "url": url,
                "path": parts.path,
                "query": parse_qs(parts.query),
                "headers": headers,
                "body": body,
            }
        )
        if parts.netloc == "management.azure.com":
            return self._arm(method, parts.path)
        return self._blob(method, parts.path, headers, body)

    def _arm(self, method, path):
        if method == "POST" and path == f"{REGISTRY_PATH}/listBuildSourceUploadUrl":
            relative = urlsplit(self.upload_url).path.split("/", 2)[-1]
            return _json(
                200,
                {
                    "uploadUrl": f"{self.upload_url}?sv=2024-01-01&sr=b&sp=cw&sig=UPLOADSIG",
                    "relativePath": relative,
                },
            )
        if method == "POST" and path == f"{REGISTRY_PATH}/scheduleRun":
            if self.schedule_error:
                return _json(*self.schedule_error)
            if self.schedule_accepted == "run":
                return _json(202, self._run("Queued"))
            if self.schedule_accepted == "location":
                return 202, {"Location": f"{ARM}{OPERATION_PATH}?api-version=2025-03-01-preview",
                             "Retry-After": "0", "Content-Length": "0"}, b""
            if self.schedule_accepted == "nothing":
                return 202, {"Content-Length": "0"}, b""
            return _json(200, self._run("Queued"))
        if method == "GET" and path == OPERATION_PATH:
            self.operation_polls -= 1
            if self.operation_polls > 0:
                return 202, {"Location": f"{ARM}{OPERATION_PATH}", "Retry-After": "0",
                             "Content-Length": "0"}, b""
            return _json(200, self._run("Queued"))
        if method == "GET" and path == f"{REGISTRY_PATH}/runs/cb7":
            self.gets += 1
            status = self.statuses[min(self.gets, len(self.statuses) - 1)]
            if self.canceled_at is not None and self.cancel_takes is not None:
                if self.gets > self.canceled_at + self.cancel_takes:
                    status = "Canceled"
            if self.log_chunks:
                self.append_log(self.log_chunks.pop(0))
            while self.log_chunks and status not in ("Queued", "Started", "Running"):
                self.append_log(self.log_chunks.pop(0))  # a finished run's log is complete
            return _json(200, self._run(status))
        if method == "POST" and path == f"{REGISTRY_PATH}/runs/cb7/cancel":
            status, body = self.cancel_answer
            if status in (200, 202):
                self.canceled_at = self.gets
            if status == 202:
                return 202, {"Content-Length": "0"}, b""
            return _json(status, body)
        if method == "POST" and path == f"{REGISTRY_PATH}/runs/cb7/listLogSasUrl":
            return _json(200, {"logLink": f"{self.log_url}?sv=2024-01-01&sr=b&sp=r&sig=LOGSIG"})
        return _json(404, {"error": {"code": "NotFound", "message": f"no route {method} {path}"}})

    def _run(self, status):
        properties = {
            "runId": "cb7",
            "status": status,
            "runType": "QuickBuild",
            "provisioningState": "Succeeded",
            "platform": {"os": "Linux", "architecture": "amd64"},
        }
        if status not in ("Queued", "Started", "Running"):
            properties.update(self.final)
        return {
            "id": f"{REGISTRY_PATH}/runs/cb7",
            "name": "cb7",
            "type": "Microsoft.ContainerRegistry/registries/runs",
            "properties": properties,
        }

    def _append_own_log(self, chunk: bytes):
        path = urlsplit(self.log_url).path
        self.blobs[path] = self.blobs.get(path, b"") + chunk

    def _blob(self, method, path, headers, body):
        common = {
            "ETag": '"0x8DC0000000000001"',
            "Last-Modified": formatdate(usegmt=True),
            "x-ms-version": "2025-01-05",
            "x-ms-request-id": "req",
        }
        if method == "PUT":
            self.blobs[path] = body
            return 201, {**common, "Content-Length": "0", "x-ms-request-server-encrypted": "true"}, b""
        if method == "GET":
            if path not in self.blobs:
                return _storage_error(404, "BlobNotFound", common)
            data = self.blobs[path]
            lower = {k.lower(): v for k, v in headers.items()}
            start, end = 0, len(data) - 1
            if "x-ms-range" in lower:
                first, _, last = lower["x-ms-range"].removeprefix("bytes=").partition("-")
                start = int(first)
                end = min(int(last) if last else len(data) - 1, len(data) - 1)
                if start >= len(data):
                    return _storage_error(
                        416, "InvalidRange", {**common, "Content-Range": f"bytes */{len(data)}"}
                    )
            part = data[start : end + 1]
            return (
                206,
                {
                    **common,
                    "Content-Length": str(len(part)),
                    "Content-Type": "text/plain",
                    "Content-Range": f"bytes {start}-{end}/{len(data)}",
                    "x-ms-blob-type": "AppendBlob",
                    "Accept-Ranges": "bytes",
                },
                part,
            )
        return _storage_error(405, "UnsupportedHttpVerb", common)


def _json(status, payload):
    return (
        status,
        {"Content-Type": "application/json; charset=utf-8", "x-ms-request-id": "req"},
        (json.dumps(payload).encode()),
    )


def _storage_error(status, code, headers):
    body = (
        f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code><Message>{code}</Message></Error>'
    ).encode()
    return (
        status,
        {
            **headers,
            "x-ms-error-code": code,
            "Content-Type": "application/xml",
            "Content-Length": str(len(body)),
        },
        body,
    )


class _CannedAdapter(requests.adapters.BaseAdapter):
    """The network end of the transport: hands each prepared request to the fake and wraps its answer."""

    def __init__(self, fake: FakeAcr):
        super().__init__()
        self.fake = fake

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        body = request.body
        if body is None:
            body = b""
        elif hasattr(body, "read"):
            body = body.read()
        elif isinstance(body, str):
            body = body.encode()
        elif not isinstance(body, bytes):
            body = b"".join(chunk if isinstance(chunk, bytes) else chunk.encode() for chunk in body)
        status, headers, content = self.fake.handle(request.method, request.url, dict(request.headers), body)
        raw = urllib3.HTTPResponse(
            body=io.BytesIO(content),
            headers=headers,
            status=status,
            preload_content=False,
            decode_content=False,
            reason="canned",
        )
        return requests.adapters.HTTPAdapter().build_response(request, raw)

    def close(self):
        pass


class CannedTransport(RequestsTransport):
    """An azure-core HttpTransport whose wire is FakeAcr: every request is recorded and answered."""

    def __init__(self, fake: FakeAcr):
        session = requests.Session()
        session.trust_env = False
        adapter = _CannedAdapter(fake)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        super().__init__(session=session, session_owner=False)


def make_builder(fake: FakeAcr, *, blobs_via_fake: bool = True, **kwargs) -> AcrBuilder:
    client = ContainerRegistryTasksMgmtClient(
        StubCredential(), SUB, transport=CannedTransport(fake), retry_total=0
    )
    if blobs_via_fake:
        kwargs["blob_from_url"] = lambda url: BlobClient.from_blob_url(
            url, transport=CannedTransport(fake), retry_total=0
        )
    kwargs.setdefault("sleep", lambda _: None)
    return AcrBuilder(client, RG, REGISTRY, poll_interval=0, **kwargs)


def make_context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    (ctx / "src").mkdir(parents=True)
    (ctx / "Dockerfile").write_text("FROM contosoacr.azurecr.io/base:1\nCOPY src /src\n")
    (ctx / "src" / "app.py").write_text("print('hi')\n")
    (ctx / ".git").mkdir()
    (ctx / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    return ctx


def request_for(context: BuildContext, **overrides) -> BuildRequest:
    values = dict(
        run_id="da7",
        context=context,
        dockerfile="Dockerfile",
        images=["contosoacr.azurecr.io/app:v1", "app:latest"],
        build_args={"VERSION": "1.2"},
        secret_args={"TOKEN": SECRET},
        platform="linux",
        timeout_seconds=900,
        base_images=["contosoacr.azurecr.io/base:1"],
    )
    values.update(overrides)
    return BuildRequest(**values)


def tar_members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name: (tar.extractfile(m).read() if m.isfile() else b"") for m in tar.getmembers()}


LOG_CHUNKS = [
    b"Step 1/2 : FROM contosoacr.azurecr.io/base:1\r\n",
    b"Step 2/2 : RUN echo " + SECRET.encode() + b"\nSuccessfully built\n",
    b"pushed app:v1 digest: " + DIGEST.encode(),  # ACR's last line may come without a newline
]


def test_uploads_context_schedules_docker_build_and_follows_the_run(tmp_path, caplog):
    fake = FakeAcr(
        log_chunks=list(LOG_CHUNKS),
        final={
            "outputImages": [
                {"registry": "contosoacr.azurecr.io", "repository": "app", "tag": "v1", "digest": DIGEST}
            ]
        },
    )
    builder = make_builder(fake, resolve_digest=lambda ref: "sha256:" + "cd" * 32)
    lines: list[str] = []
    caplog.set_level(logging.DEBUG)

    result = builder.build(request_for(BuildContext(path=str(make_context(tmp_path)))), lines.append)

    assert result.status == RunStatus.SUCCEEDED
    assert result.output_digest == DIGEST
    assert result.reason is None
    assert result.base_digests == {"contosoacr.azurecr.io/base:1": "sha256:" + "cd" * 32}

    # Every management call is authenticated and versioned like the REST API wants.
    arm = [r for r in fake.requests if "management.azure.com" in r["url"]]
    assert arm and all(r["headers"]["Authorization"] == "Bearer stub-token" for r in arm)
    assert all(r["query"]["api-version"] == ["2025-03-01-preview"] for r in arm)

    # 1. the source-upload URL was asked for, and the context went to that blob as a tar.gz
    assert len(fake.calls("POST", "/listBuildSourceUploadUrl")) == 1
    (put,) = fake.calls("PUT", "/ab12cd.tar.gz")
    assert put["query"]["sig"] == ["UPLOADSIG"]
    assert put["headers"]["x-ms-blob-type"] == "BlockBlob"
    members = tar_members(put["body"])
    assert members["Dockerfile"].startswith(b"FROM contosoacr.azurecr.io/base:1")
    assert members["src/app.py"] == b"print('hi')\n"
    assert not any(name.startswith(".git") for name in members)

    # 2. scheduleRun got a DockerBuildRequest in the REST shape
    (schedule,) = fake.calls("POST", "/scheduleRun")
    body = json.loads(schedule["body"])
    assert body["type"] == "DockerBuildRequest"
    assert body["imageNames"] == ["app:v1", "app:latest"]
    assert body["isPushEnabled"] is True
    assert body["dockerFilePath"] == "Dockerfile"
    assert body["sourceLocation"] == "source/202611270000/ab12cd.tar.gz"
    assert body["platform"] == {"os": "Linux"}
    assert body["timeout"] == 900
    assert body["arguments"] == [
        {"name": "VERSION", "value": "1.2", "isSecret": False},
        {"name": "TOKEN", "value": SECRET, "isSecret": True},
    ]

    # 3. the run was polled until it ended, and its log read through the log SAS URL
    assert fake.gets == 2
    assert len(fake.calls("GET", "/runs/cb7")) == 2
    assert fake.calls("POST", "/runs/cb7/listLogSasUrl")
    log_reads = fake.calls("GET", "/cb7/rawtext.log")
    assert log_reads and all(r["query"]["sig"] == ["LOGSIG"] for r in log_reads)

    # 4. log lines arrived whole, in order, the last partial one flushed, the secret masked
    assert "Step 1/2 : FROM contosoacr.azurecr.io/base:1" in lines
    assert "Step 2/2 : RUN echo ***" in lines
    assert f"pushed app:v1 digest: {DIGEST}" in lines
    assert lines.index("Successfully built") < lines.index(f"pushed app:v1 digest: {DIGEST}")
    assert lines[-1] == f"ACR run cb7: Succeeded ({DIGEST})"
    assert not any(SECRET in line for line in lines)
    assert SECRET not in caplog.text


def test_git_context_is_passed_as_source_location_without_upload(tmp_path):
    fake = FakeAcr(final={"outputImages": [{"digest": DIGEST}]})
    lines: list[str] = []
    context = BuildContext(path=str(make_context(tmp_path)), git_url="https://github.com/contoso/app.git",
                           branch="release", git_token="ghp_tok")

    result = make_builder(fake).build(request_for(context, secret_args={}), lines.append)

    assert result.status == RunStatus.SUCCEEDED
    assert not fake.calls("POST", "/listBuildSourceUploadUrl")
    assert not [r for r in fake.requests if r["method"] == "PUT"]
    body = json.loads(fake.calls("POST", "/scheduleRun")[0]["body"])
    assert body["sourceLocation"] == "https://x-access-token:ghp_tok@github.com/contoso/app.git#release"
    assert body["arguments"] == [{"name": "VERSION", "value": "1.2", "isSecret": False}]
    assert not any("ghp_tok" in line for line in lines)
    assert any("github.com/contoso/app.git#release" in line for line in lines)


def test_a_run_of_a_commit_has_acr_build_that_commit(tmp_path):
    fake = FakeAcr(final={"outputImages": [{"digest": DIGEST}]})
    commit = "0123456789abcdef0123456789abcdef01234567"
    context = BuildContext(path=str(make_context(tmp_path)), git_url="https://github.com/contoso/app.git",
                           branch="main", commit=commit)

    make_builder(fake).build(request_for(context, secret_args={}), [].append)

    body = json.loads(fake.calls("POST", "/scheduleRun")[0]["body"])
    assert body["sourceLocation"] == f"https://github.com/contoso/app.git#{commit}"


def test_a_canceled_run_is_canceled_in_acr_too_and_forced_runs_skip_the_cache(tmp_path):
    fake = FakeAcr(statuses=("Queued", "Running", "Running", "Running"))
    request = request_for(BuildContext(path=str(make_context(tmp_path))), no_cache=True)
    request.cancel.set()  # canceled while ACR still runs it

    lines: list[str] = []

    result = make_builder(fake).build(request, lines.append)

    assert result.status == "Canceled"
    assert result.reason == "canceled by request"
    assert fake.calls("POST", "/runs/cb7/cancel")
    assert lines[-1] == "ACR run cb7: Canceled"  # ACR said so before the build returned
    assert json.loads(fake.calls("POST", "/scheduleRun")[0]["body"])["noCache"] is True


CANCEL_FORBIDDEN = (
    403,
    {
        "error": {
            "code": "AuthorizationFailed",
            "message": "The client does not have authorization to perform action "
            "'Microsoft.ContainerRegistry/registries/runs/cancel/action'.",
        }
    },
)


def test_a_cancel_acr_refuses_is_recorded_in_the_log_and_result_not_raised(tmp_path):
    fake = FakeAcr(statuses=("Queued", "Running"), cancel_answer=CANCEL_FORBIDDEN)
    request = request_for(BuildContext(path=str(make_context(tmp_path))))
    request.cancel.set()
    lines: list[str] = []

    result = make_builder(fake).build(request, lines.append)  # must not raise: no redelivery

    assert result.status == RunStatus.CANCELED
    assert result.reason.startswith("canceled by request; canceling ACR run cb7 failed")
    assert "runs/cancel/action" in result.reason and "may still push" in result.reason
    assert any(line.startswith("canceling ACR run cb7 failed") for line in lines)
    assert len(fake.calls("POST", "/runs/cb7/cancel")) == 1
    assert not any(SECRET in line for line in lines)


def test_a_cancel_accepted_with_202_is_followed_until_acr_reports_the_run_canceled(tmp_path):
    fake = FakeAcr(statuses=("Queued", "Running"), cancel_answer=(202, None), cancel_takes=2)
    request = request_for(BuildContext(path=str(make_context(tmp_path))))
    request.cancel.set()
    lines: list[str] = []

    result = make_builder(fake).build(request, lines.append)

    assert result.status == RunStatus.CANCELED and result.reason == "canceled by request"
    # two gets still Running after the cancel, the third one Canceled
    assert fake.gets == fake.canceled_at + 3
    assert lines[-1] == "ACR run cb7: Canceled"


def test_a_cancel_that_never_takes_effect_is_reported_after_a_bounded_wait(tmp_path):
    from shared.adapters.builders.acr import CANCEL_PATIENCE_SECONDS

    now = [0.0]

    def sleep(seconds):
        now[0] += 10

    fake = FakeAcr(statuses=("Queued", "Running"), cancel_takes=None)
    request = request_for(BuildContext(path=str(make_context(tmp_path))))
    request.cancel.set()
    lines: list[str] = []

    result = make_builder(fake, sleep=sleep, clock=lambda: now[0]).build(request, lines.append)

    assert result.status == RunStatus.CANCELED
    assert result.reason == (
        "canceled by request; ACR run cb7 was still Running after the cancel: it may still push its images"
    )
    assert CANCEL_PATIENCE_SECONDS <= now[0] <= CANCEL_PATIENCE_SECONDS + 20
    assert lines[-1] == result.reason.removeprefix("canceled by request; ")


def test_a_takeover_follows_the_acr_run_the_earlier_attempt_scheduled(tmp_path):
    """The worker that took the run over (the first one's heartbeat went stale) hands the builder the
    ACR run id the first attempt saved: it is followed, and no second ACR run is scheduled."""
    fake = FakeAcr(statuses=("Running", "Running", "Succeeded"), log_chunks=[b"Step 2/2\n"],
                   final={"outputImages": [{"digest": DIGEST}]})
    lines: list[str] = []
    saved: list[str] = []
    request = request_for(BuildContext(path=str(make_context(tmp_path))), builder_run_id="cb7",
                          record_builder_run=lambda acr_run_id: saved.append(acr_run_id) or True)

    result = make_builder(fake).build(request, lines.append)

    assert (result.status, result.output_digest) == (RunStatus.SUCCEEDED, DIGEST)
    assert not fake.calls("POST", "/scheduleRun")
    assert not fake.calls("POST", "/listBuildSourceUploadUrl")
    assert not [r for r in fake.requests if r["method"] == "PUT"]
    assert saved == []  # the id is on the record already
    assert lines[0] == ("following ACR run cb7, scheduled by an earlier attempt of this run (Running): "
                        "no second run is scheduled")
    assert "Step 2/2" in lines and lines[-1] == f"ACR run cb7: Succeeded ({DIGEST})"


def test_a_takeover_whose_acr_run_acr_does_not_know_schedules_a_new_one(tmp_path):
    fake = FakeAcr(final={"outputImages": [{"digest": DIGEST}]})
    saved: list[str] = []
    lines: list[str] = []
    request = request_for(BuildContext(path=str(make_context(tmp_path))), builder_run_id="cb1",
                          record_builder_run=lambda acr_run_id: saved.append(acr_run_id) or True)

    result = make_builder(fake).build(request, lines.append)

    assert result.status == RunStatus.SUCCEEDED
    assert len(fake.calls("POST", "/scheduleRun")) == 1 and saved == ["cb7"]
    assert lines[0] == "ACR run cb1 of an earlier attempt is not in contosoacr: scheduling a new one"


def test_an_acr_run_scheduled_after_another_attempt_took_the_run_over_is_canceled(tmp_path):
    """The stale worker scheduled its ACR run just after the run was taken over: saving the id is
    refused (the record names another attempt), so it cancels that run instead of pushing too."""
    fake = FakeAcr(statuses=("Queued", "Running", "Running", "Running"))
    lines: list[str] = []
    request = request_for(BuildContext(path=str(make_context(tmp_path))),
                          record_builder_run=lambda acr_run_id: False)

    result = make_builder(fake).build(request, lines.append)

    assert result.status == RunStatus.CANCELED
    assert result.reason == "another attempt took this run over: its ACR run cb7 was canceled"
    assert len(fake.calls("POST", "/runs/cb7/cancel")) == 1
    assert lines[-1] == "ACR run cb7: Canceled"


def test_an_acr_run_whose_id_cannot_be_saved_is_canceled_and_the_error_raised(tmp_path):
    fake = FakeAcr(statuses=("Queued", "Running", "Running", "Running"))

    def storage_down(acr_run_id):
        raise OSError("table storage unreachable")

    request = request_for(BuildContext(path=str(make_context(tmp_path))), record_builder_run=storage_down)
    with pytest.raises(OSError):
        make_builder(fake).build(request, [].append)
    assert len(fake.calls("POST", "/runs/cb7/cancel")) == 1


def test_a_takeover_before_scheduling_schedules_nothing(tmp_path):
    fake = FakeAcr()
    request = request_for(BuildContext(path=str(make_context(tmp_path))), still_ours=lambda: False)

    result = make_builder(fake).build(request, [].append)

    assert result.status == RunStatus.CANCELED
    assert not fake.calls("POST", "/scheduleRun") and not fake.calls("POST", "/listBuildSourceUploadUrl")


def test_a_run_still_queued_at_the_deadline_is_canceled_in_acr(tmp_path):
    """Returning Timeout without canceling would leave the queued ACR run to push later and trigger
    rebuilds of everything built on its image."""
    fake = FakeAcr(statuses=("Queued",), cancel_takes=0)
    ticks = iter(range(0, 10**6, 400))  # each look at the clock is 400 s later
    lines: list[str] = []
    request = request_for(BuildContext(path=str(make_context(tmp_path))))

    result = make_builder(fake, clock=lambda: next(ticks)).build(request, lines.append)

    assert result.status == RunStatus.TIMEOUT
    assert result.reason == "ACR run cb7 was still Queued after 1500 s; canceled in ACR"
    assert len(fake.calls("POST", "/runs/cb7/cancel")) == 1
    assert lines[-2:] == ["ACR run cb7 was still Queued after 1500 s", "ACR run cb7: Canceled"]


def test_a_deadline_cancel_acr_does_not_carry_out_says_the_run_may_still_push(tmp_path):
    fake = FakeAcr(statuses=("Queued",), cancel_answer=CANCEL_FORBIDDEN)
    ticks = iter(range(0, 10**6, 400))

    result = make_builder(fake, clock=lambda: next(ticks)).build(
        request_for(BuildContext(path=str(make_context(tmp_path)))), [].append)

    assert result.status == RunStatus.TIMEOUT
    assert result.reason.startswith("ACR run cb7 was still Queued after 1500 s; canceling ACR run cb7 failed")
    assert "may still push" in result.reason


def ended_run(builder_run_id: str | None = "cb7") -> RunRecord:
    """A basetrigger run ended while no worker follows it, naming the ACR run an attempt scheduled."""
    return RunRecord("da7", RunStatus.FAILED, Trigger.MANUAL, task="app", attempt=1,
                     reason="the worker stopped reporting", builder_run_id=builder_run_id)


def test_cancel_of_a_run_no_worker_follows_cancels_its_acr_run_without_waiting():
    fake = FakeAcr(statuses=("Running",))

    assert make_builder(fake).cancel(ended_run()) is None

    (cancel,) = fake.calls("POST", "/runs/cb7/cancel")
    assert cancel["query"]["api-version"] == ["2025-03-01-preview"]
    assert cancel["headers"]["Authorization"] == "Bearer stub-token"
    assert fake.gets == 0  # the caller (housekeeping, an API request) does not wait for ACR


def test_cancel_accepted_with_202_is_taken():
    fake = FakeAcr(statuses=("Running",), cancel_answer=(202, None))
    assert make_builder(fake).cancel(ended_run()) is None
    assert len(fake.calls("POST", "/runs/cb7/cancel")) == 1


def test_cancel_acr_refuses_for_a_run_still_running_says_it_may_still_push_and_never_raises():
    fake = FakeAcr(statuses=("Running",), cancel_answer=CANCEL_FORBIDDEN)

    note = make_builder(fake).cancel(ended_run())

    assert note.startswith("canceling ACR run cb7 failed ((AuthorizationFailed) The client does not have")
    assert "runs/cancel/action" in note
    assert note.endswith("it may still push its images")
    assert fake.gets == 1  # it looked whether the run had ended anyway


def test_cancel_refused_for_a_run_that_had_ended_is_no_failure():
    """Canceled from elsewhere meanwhile (the worker that still followed it) or finished: ACR may
    refuse the cancel, and there is nothing left to stop."""
    fake = FakeAcr(statuses=("Canceled",), cancel_answer=(409, {"error": {"code": "Conflict",
                                                                          "message": "run is not active"}}))
    assert make_builder(fake).cancel(ended_run()) is None


def test_cancel_when_acr_cannot_be_reached_at_all_is_a_note_not_an_error():
    fake = FakeAcr(cancel_answer=(500, {"error": {"code": "InternalServerError", "message": "boom"}}))
    fake.statuses = ["Running"]
    original = fake._arm

    def broken_gets(method, path):
        if method == "GET":
            return _json(503, {"error": {"code": "ServiceUnavailable", "message": "down"}})
        return original(method, path)

    fake._arm = broken_gets
    note = make_builder(fake).cancel(ended_run())
    assert note == "canceling ACR run cb7 failed ((InternalServerError) boom): it may still push its images"


def test_cancel_of_a_run_without_an_acr_run_sends_nothing():
    fake = FakeAcr()
    assert make_builder(fake).cancel(ended_run(builder_run_id=None)) is None
    assert fake.requests == []


def test_a_worker_cancel_refused_because_the_run_was_canceled_meanwhile_is_no_failure(tmp_path):
    """The API canceled the ACR run while the worker still followed it: the worker's own cancel
    may be refused, which must not be logged as a run that may still push."""
    fake = FakeAcr(statuses=("Queued", "Canceled"),
                   cancel_answer=(409, {"error": {"code": "Conflict", "message": "run is not active"}}))
    request = request_for(BuildContext(path=str(make_context(tmp_path))))
    request.cancel.set()
    lines: list[str] = []

    result = make_builder(fake).build(request, lines.append)

    assert (result.status, result.reason) == (RunStatus.CANCELED, "canceled by request")
    assert lines[-1] == "ACR run cb7: Canceled"
    assert not any("may still push" in line for line in lines)


def test_schedule_run_answered_202_with_the_run_is_followed_with_runs_get(tmp_path):
    fake = FakeAcr(schedule_accepted="run", final={"outputImages": [{"digest": DIGEST}]})

    result = make_builder(fake).build(request_for(BuildContext(path=str(make_context(tmp_path)))),
                                      lambda _: None)

    assert result.status == RunStatus.SUCCEEDED and result.output_digest == DIGEST
    assert len(fake.calls("POST", "/scheduleRun")) == 1
    assert fake.calls("GET", "/runs/cb7")


def test_schedule_run_answered_202_with_a_location_polls_it_until_it_names_the_run(tmp_path):
    fake = FakeAcr(schedule_accepted="location", operation_polls=3,
                   final={"outputImages": [{"digest": DIGEST}]})

    result = make_builder(fake).build(request_for(BuildContext(path=str(make_context(tmp_path)))),
                                      lambda _: None)

    assert result.status == RunStatus.SUCCEEDED and result.output_digest == DIGEST
    polls = fake.calls("GET", OPERATION_PATH)
    assert len(polls) == 3
    assert all(r["headers"]["Authorization"] == "Bearer stub-token" for r in polls)
    assert len(fake.calls("POST", "/scheduleRun")) == 1  # polled, never scheduled twice


def test_schedule_run_answered_202_naming_nothing_is_an_error_with_the_reason(tmp_path):
    fake = FakeAcr(schedule_accepted="nothing")

    result = make_builder(fake).build(request_for(BuildContext(path=str(make_context(tmp_path)))),
                                      lambda _: None)

    assert result.status == RunStatus.ERROR
    assert "202" in result.reason
    assert not fake.calls("GET", "/runs/cb7")


def test_scheduling_refused_by_arm_is_an_error_with_the_reason(tmp_path):
    fake = FakeAcr(
        schedule_error=(
            403,
            {
                "error": {
                    "code": "AuthorizationFailed",
                    "message": "The client does not have authorization to perform action "
                    "'Microsoft.ContainerRegistry/registries/scheduleRun/action'.",
                }
            },
        )
    )
    lines: list[str] = []

    result = make_builder(fake).build(
        request_for(BuildContext(path=str(make_context(tmp_path)))), lines.append
    )

    assert result.status == RunStatus.ERROR
    assert "scheduleRun/action" in result.reason
    assert not fake.calls("GET", "/runs/cb7")
    assert not any(SECRET in line for line in lines)


def test_images_of_another_registry_are_refused_before_any_call(tmp_path):
    fake = FakeAcr()

    result = make_builder(fake).build(
        request_for(BuildContext(path=str(make_context(tmp_path))), images=["docker.io/library/app:1"]),
        lambda _: None,
    )

    assert result.status == RunStatus.ERROR
    assert "contosoacr.azurecr.io" in result.reason
    assert fake.requests == []


def test_timeout_is_clamped_to_what_acr_accepts(tmp_path):
    fake = FakeAcr()
    make_builder(fake).build(
        request_for(
            BuildContext(path=str(make_context(tmp_path))), timeout_seconds=30, platform="linux/arm64/v8"
        ),
        lambda _: None,
    )
    body = json.loads(fake.calls("POST", "/scheduleRun")[0]["body"])
    assert body["timeout"] == 300
    assert body["platform"] == {"os": "Linux", "architecture": "arm64", "variant": "v8"}


HUB_PASSWORD = "dckr_pat_hub-s3cr3t"
GHCR_PASSWORD = "ghp_registry-s3cr3t"


def test_registry_credentials_reach_the_run_as_custom_registry_credentials(tmp_path, caplog):
    fake = FakeAcr(log_chunks=[b"Login Succeeded " + HUB_PASSWORD.encode() + b"\n"],
                   final={"outputImages": [{"digest": DIGEST}]})
    credentials = (
        RegistryCredential.create("index.docker.io", "hubuser", HUB_PASSWORD),  # stored as docker.io
        RegistryCredential.create("ghcr.io", "octo", GHCR_PASSWORD),
    )
    lines: list[str] = []
    caplog.set_level(logging.DEBUG)

    result = make_builder(fake).build(
        request_for(BuildContext(path=str(make_context(tmp_path))), credentials=credentials), lines.append
    )

    assert result.status == RunStatus.SUCCEEDED
    body = json.loads(fake.calls("POST", "/scheduleRun")[0]["body"])
    assert body["credentials"] == {
        "customRegistries": {
            "docker.io": {
                "userName": {"type": "Opaque", "value": "hubuser"},
                "password": {"type": "Opaque", "value": HUB_PASSWORD},
            },
            "ghcr.io": {
                "userName": {"type": "Opaque", "value": "octo"},
                "password": {"type": "Opaque", "value": GHCR_PASSWORD},
            },
        }
    }
    assert "Login Succeeded ***" in lines
    for password in (HUB_PASSWORD, GHCR_PASSWORD):
        assert not any(password in line for line in lines)
        assert password not in caplog.text


def test_identity_credentials_add_nothing_and_say_so_in_the_log(tmp_path):
    fake = FakeAcr()
    credentials = (
        RegistryCredential.create("otheracr.azurecr.io", use_identity=True),
        RegistryCredential.create("contosoacr.azurecr.io", use_identity=True),  # the run's own registry
    )
    lines: list[str] = []

    make_builder(fake).build(
        request_for(BuildContext(path=str(make_context(tmp_path))), credentials=credentials), lines.append
    )

    body = json.loads(fake.calls("POST", "/scheduleRun")[0]["body"])
    assert "credentials" not in body
    notes = [line for line in lines if line.startswith("registry credential")]
    assert notes == [
        "registry credential for otheracr.azurecr.io not used: it signs in with the app's managed "
        "identity, which an ACR quick run cannot use"
    ]


def test_a_password_echoed_by_a_refused_schedule_is_masked_in_the_reason_and_log(tmp_path, caplog):
    fake = FakeAcr(schedule_error=(400, {"error": {"code": "InvalidRequest",
                                                   "message": f"bad credential {GHCR_PASSWORD}"}}))
    lines: list[str] = []
    caplog.set_level(logging.DEBUG)

    result = make_builder(fake).build(
        request_for(BuildContext(path=str(make_context(tmp_path))),
                    credentials=(RegistryCredential.create("ghcr.io", "octo", GHCR_PASSWORD),)),
        lines.append,
    )

    assert result.status == RunStatus.ERROR
    assert "bad credential ***" in result.reason
    assert not any(GHCR_PASSWORD in line for line in lines)
    assert GHCR_PASSWORD not in caplog.text


# -- the same flow with the blobs in a real Azurite ---------------------------------------------------

def test_from_settings_uses_the_configured_registry_and_login_server():
    from shared import config

    settings = config.load(
        {
            "AzureWebJobsStorage": "UseDevelopmentStorage=true",
            "BASETRIGGER_BUILDER": "acr",
            "BASETRIGGER_REGISTRY": "contosoacr-abc123.azurecr.us",
            "BASETRIGGER_ACR_SUBSCRIPTION_ID": SUB,
            "BASETRIGGER_ACR_RESOURCE_GROUP": RG,
            "BASETRIGGER_ACR_NAME": REGISTRY,
        }
    )
    builder = AcrBuilder.from_settings(settings, credential=StubCredential())
    assert builder.login_server == "contosoacr-abc123.azurecr.us"

    incomplete = config.load(
        {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "BASETRIGGER_BUILDER": "acr"}
    )
    with pytest.raises(config.ConfigError, match="BASETRIGGER_ACR_SUBSCRIPTION_ID"):
        AcrBuilder.from_settings(incomplete, credential=StubCredential())
