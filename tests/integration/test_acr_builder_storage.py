"""The ACR builder's blob side against a real Azurite: the source upload and the log read go to a
blob service through SAS URLs, the way the builder talks to ACR's storage (the rest of the builder
is in tests/unit/test_acr_builder.py, through the management client's transport)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient, BlobType

from shared.domain.builds import BuildContext
from shared.domain.vocabulary import RunStatus
from tests.unit.test_acr_builder import (
    DIGEST,
    LOG_CHUNKS,
    FakeAcr,
    _json,
    make_builder,
    make_context,
    request_for,
    tar_members,
)

AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def azurite_blob_endpoint(tmp_path_factory):
    """A blob endpoint of a real Azurite: the stack's if the tests run under it, else one started here."""
    conn = os.environ.get("AzureWebJobsStorage", "")
    parts = dict(p.split("=", 1) for p in conn.split(";") if "=" in p)
    if parts.get("AccountName") == AZURITE_ACCOUNT and parts.get("BlobEndpoint"):
        yield parts["BlobEndpoint"].rstrip("/")
        return
    binary = ROOT / ".stack/node/node_modules/.bin/azurite-blob"
    node = shutil.which("node")
    if not binary.exists() or not node:
        pytest.fail(
            "Azurite is not installed (npm install --prefix .stack/node azurite@3); "
            "the canned-transport tests cover the same flow"
        )
    port = _free_port()
    data = tmp_path_factory.mktemp("azurite")
    proc = subprocess.Popen(
        [
            str(binary),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--location",
            str(data),
            "--silent",
            "--skipApiVersionCheck",
            "--loose",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("Azurite did not start")
        yield f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_context_and_log_through_a_real_azurite(tmp_path, azurite_blob_endpoint):
    from azure.storage.blob import BlobSasPermissions, generate_blob_sas

    service = BlobServiceClient(
        azurite_blob_endpoint, credential={"account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY}
    )
    suffix = os.urandom(4).hex()
    source, logs = (
        service.get_container_client(f"acrsrc{suffix}"),
        service.get_container_client(f"acrlog{suffix}"),
    )
    source.create_container()
    logs.create_container()
    log_blob = logs.get_blob_client("cb7/rawtext.log")
    log_blob.create_append_blob()
    expiry = datetime.now(UTC) + timedelta(hours=1)

    def sas_url(container, name, permission):
        token = generate_blob_sas(
            AZURITE_ACCOUNT, container, name, account_key=AZURITE_KEY, permission=permission, expiry=expiry
        )
        return f"{azurite_blob_endpoint}/{container}/{name}?{token}"

    class AzuriteAcr(FakeAcr):
        # ACR hands out SAS URLs to its own storage; here they point into Azurite.
        def _arm(self, method, path):
            if path.endswith("/listBuildSourceUploadUrl"):
                return _json(
                    200,
                    {
                        "uploadUrl": sas_url(
                            source.container_name,
                            "upload/ctx.tar.gz",
                            BlobSasPermissions(create=True, write=True),
                        ),
                        "relativePath": "upload/ctx.tar.gz",
                    },
                )
            if path.endswith("/listLogSasUrl"):
                return _json(
                    200,
                    {
                        "logLink": sas_url(
                            logs.container_name, "cb7/rawtext.log", BlobSasPermissions(read=True)
                        )
                    },
                )
            return super()._arm(method, path)

    fake = AzuriteAcr(
        statuses=("Queued", "Running", "Running", "Succeeded"),
        log_chunks=list(LOG_CHUNKS),
        append_log=lambda chunk: log_blob.append_block(chunk),
        final={"outputImages": [{"digest": DIGEST}]},
    )
    lines: list[str] = []

    result = make_builder(fake, blobs_via_fake=False).build(
        request_for(BuildContext(path=str(make_context(tmp_path)))), lines.append
    )

    assert result.status == RunStatus.SUCCEEDED and result.output_digest == DIGEST
    uploaded = source.get_blob_client("upload/ctx.tar.gz")
    assert uploaded.get_blob_properties().blob_type == BlobType.BLOCKBLOB
    assert tar_members(uploaded.download_blob().readall())["src/app.py"] == b"print('hi')\n"
    body = json.loads(fake.calls("POST", "/scheduleRun")[0]["body"])
    assert body["sourceLocation"] == "upload/ctx.tar.gz"
    assert [line for line in lines if not line.startswith("ACR run")] == [
        "Step 1/2 : FROM contosoacr.azurecr.io/base:1",
        "Step 2/2 : RUN echo ***",
        "Successfully built",
        f"pushed app:v1 digest: {DIGEST}",
    ]
