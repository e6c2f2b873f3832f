"""Real buildah and registry operations the integration tests use to set up and inspect images."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

BUSYBOX = "/bin/busybox"
BASE_DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN echo "{version}" > /etc/base-version
"""


def _tls() -> list[str]:
    cert_dir = os.environ.get("REGISTRY_CERT_DIR")
    return ["--cert-dir", cert_dir] if cert_dir else []


def buildah(*args: str) -> str:
    result = subprocess.run(["buildah", "--storage-driver", "vfs", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise AssertionError(f"buildah {' '.join(args[:2])} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def push_base(workdir: Path, image: str, version: str) -> str:
    """Build a busybox base image that records `version` in /etc/base-version, push it, return its digest."""
    context = workdir / f"base-{version}"
    context.mkdir(parents=True, exist_ok=True)
    shutil.copy(BUSYBOX, context / "busybox")
    (context / "Dockerfile").write_text(BASE_DOCKERFILE.format(version=version))
    buildah("bud", "--isolation", "chroot", "--layers=false", "-t", image, str(context))
    return push(image, workdir)


def push(image: str, workdir: Path) -> str:
    digest_file = workdir / "digest"
    buildah("push", *_tls(), "--digestfile", str(digest_file), image, f"docker://{image}")
    return digest_file.read_text().strip()


def read_file(image: str, path: str) -> str:
    """Pull `image` and read one file out of its filesystem."""
    container = buildah("from", *_tls(), "--pull-always", f"docker://{image}").strip()
    try:
        mount = buildah("mount", container).strip()
        return (Path(mount) / path.lstrip("/")).read_text()
    finally:
        buildah("rm", container)
