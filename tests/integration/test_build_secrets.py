"""Secret args never reach a pushed image nor a command line: real buildah, real registry.

A build gets the canary secrets of test_secret_canary (one line, a multi-line PEM-like key) as
secret args, uses them in `RUN --mount=type=secret` steps, and declares one as `ARG` as well. While
it runs, every process's command line and environment is read; once it is pushed, the manifest, the
config (history included) and every layer, decompressed, are read from the registry. No form of
any secret (test_secret_canary.forms) may be in any of them, and yet the build did read each secret.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import threading
import uuid
from pathlib import Path

import requests

from shared.domain.builds import BuildContext, BuildRequest
from shared.domain.vocabulary import RunStatus
from tests.integration.buildah_tools import push_base, read_file
from tests.integration.test_build_process import builder
from tests.integration.test_secret_canary import ONE_LINE, PEM, search

DOCKERFILE = """\
FROM {base}
ARG S1
ARG PLAIN
RUN --mount=type=secret,id=S1 --mount=type=secret,id=S2 \\
    sha256sum /run/secrets/S1 /run/secrets/S2 | cut -d' ' -f1 > /secret-digests \\
    && echo "plain=$PLAIN s1=$S1" > /args
RUN --mount=type=secret,id=S1 --mount=type=secret,id=S2 test -s /run/secrets/S2 && sleep 3 && echo {step}
"""

MANIFESTS = ", ".join([
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])


def process_texts() -> dict[str, str]:
    """Every process's command line and environment, as readable as this test can read them."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            for part in ("cmdline", "environ"):
                try:
                    data = (entry / part).read_bytes()
                except OSError:
                    continue
                found[f"{part} of {entry.name}"] = data.replace(b"\0", b" ").decode("utf-8", "replace")
    return found


def pushed_image(image: str) -> dict[str, str]:
    """The manifest, the config and each layer (decompressed) of a pushed image, by name."""
    registry, rest = image.split("/", 1)
    repository, tag = rest.rsplit(":", 1)
    # verify per request: a session's own is overridden by REQUESTS_CA_BUNDLE when that is set.
    session = functools.partial(requests.get, verify=os.environ.get("BASETRIGGER_REGISTRY_CA") or True)
    url = f"https://{registry}/v2/{repository}"
    manifest = session(f"{url}/manifests/{tag}", headers={"Accept": MANIFESTS}, timeout=60)
    manifest.raise_for_status()
    found = {"manifest": manifest.text}
    body = manifest.json()
    config = session(f"{url}/blobs/{body['config']['digest']}", timeout=60)
    config.raise_for_status()
    found["config"] = config.text
    for layer in body["layers"]:
        blob = session(f"{url}/blobs/{layer['digest']}", timeout=300)
        blob.raise_for_status()
        data = gzip.decompress(blob.content) if blob.content[:2] == b"\x1f\x8b" else blob.content
        found[f"layer {layer['digest']}"] = data.decode("utf-8", "replace")
    return found


def test_secret_args_reach_the_build_but_not_the_image_nor_any_command_line(tmp_path):
    registry = os.environ["REGISTRY"]
    name = f"secrets{uuid.uuid4().hex[:8]}"
    base = f"{registry}/{name}/base:1"
    push_base(tmp_path, base, "s1")
    step = f"step-{uuid.uuid4().hex}"
    folder = tmp_path / "ctx"
    folder.mkdir()
    (folder / "Dockerfile").write_text(DOCKERFILE.format(base=base, step=step))
    image = f"{registry}/{name}/app:1"
    request = BuildRequest(run_id="da0", context=BuildContext(path=str(folder)), dockerfile="Dockerfile",
                           images=[image], build_args={"PLAIN": "notsecret"},
                           secret_args={"S1": ONE_LINE, "S2": PEM})
    lines: list[str] = []
    results = []
    build = threading.Thread(target=lambda: results.append(builder().build(request, lines.append)))
    build.start()
    # Read every process while the build runs; the secret step's own `sh -c` must be among them.
    seen: dict[str, str] = {}  # each distinct text once, with where it was first seen
    while build.is_alive():
        for where, text in process_texts().items():
            seen.setdefault(text, where)
    build.join()
    seen = {where: text for text, where in seen.items()}
    assert results and results[0].status == RunStatus.SUCCEEDED, (results, "".join(lines))
    assert any(step in text and "cmdline" in where for where, text in seen.items()), \
        "the build's secret step was never seen running"

    # The build did read both secrets, and the ARG of a secret stayed empty.
    digests = read_file(image, "/secret-digests").split()
    assert digests == [hashlib.sha256(s.encode()).hexdigest() for s in (ONE_LINE, PEM)]
    assert read_file(image, "/args").strip() == "plain=notsecret s1="

    published = pushed_image(image)
    assert "notsecret" in published["config"], "the history was not searched"  # PLAIN is there
    assert len([k for k in published if k.startswith("layer")]) >= 2
    hits = search({**published, **seen})
    assert not hits, hits
    assert not [line for line in lines if "BASETRIGGER_BUILD" in line], lines
    assert json.loads(published["config"])["history"]
