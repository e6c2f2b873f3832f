"""The local builder: buildah, daemonless, as argv lists (never a shell string).

`buildah bud` builds every tag of the run in one go, then `buildah push --digestfile` pushes each
tag and reports the manifest digest. Secret build args are passed like build args (as ACR does)
and hidden from the log by the log writer; argv itself is never logged.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from shared.adapters.builders.registry_auth import auth_file_args
from shared.domain.builds import BuildRequest, BuildResult, LogSink
from shared.domain.platforms import normalized_or_given
from shared.domain.runs import Run
from shared.domain.vocabulary import RunStatus
from shared.service_layer.ports import Registry

_PR_SET_PDEATHSIG = 1
# The process groups of builds running now: killed when this process exits, so no build goes on
# (and pushes) for a worker that is gone.
_running_groups: set[int] = set()
_groups_lock = threading.Lock()


def _die_with_parent() -> None:
    """In the child, before exec: the kernel kills it when the worker that started it dies, even by
    SIGKILL (the case atexit cannot cover)."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@atexit.register
def _kill_running_builds() -> None:
    with _groups_lock:
        for pgid in list(_running_groups):
            _kill_group(pgid)


class BuildahBuilder:
    def __init__(self, registry: Registry, ca_file: str | None = None,
                 storage_driver: str = "vfs", work_dir: str = "/tmp/basetrigger"):
        self.registry = registry
        self.storage_driver = storage_driver
        self.work_dir = Path(work_dir)
        self.cert_dir: str | None = None
        if ca_file:
            # buildah wants a directory of *.crt files; it adds them to the system roots.
            cert_dir = self.work_dir / "certs"
            cert_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ca_file, cert_dir / "ca.crt")
            self.cert_dir = str(cert_dir)

    def _global(self) -> list[str]:
        return ["buildah", "--storage-driver", self.storage_driver]

    def _tls(self) -> list[str]:
        return ["--cert-dir", self.cert_dir] if self.cert_dir else []

    def _run(self, argv: list[str], log: LogSink, deadline: float, cancel: threading.Event) -> int | None:
        """Run argv streaming its output to the log; None when stopped (deadline or cancel)."""
        # A process group of its own (killed whole: buildah and the RUN steps it started), tied to
        # this worker's life.
        process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
            env=dict(os.environ, BUILDAH_ISOLATION="chroot"), start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        with _groups_lock:
            _running_groups.add(process.pid)
        stopped = threading.Event()

        def watchdog() -> None:
            while process.poll() is None:
                if time.monotonic() > deadline or cancel.is_set():
                    stopped.set()
                    _kill_group(process.pid)
                    return
                time.sleep(0.2)

        threading.Thread(target=watchdog, daemon=True).start()
        try:
            assert process.stdout is not None
            for line in process.stdout:
                log(line)
            code = process.wait()
        finally:
            _kill_group(process.pid)  # whatever the build left running
            with _groups_lock:
                _running_groups.discard(process.pid)
        return None if stopped.is_set() else code

    @staticmethod
    def _stopped(request: BuildRequest, base_digests: dict[str, str]) -> BuildResult:
        if request.cancel.is_set():
            return BuildResult(RunStatus.CANCELED, base_digests=base_digests, reason="canceled by request")
        return BuildResult(RunStatus.TIMEOUT, base_digests=base_digests,
                           reason=f"the build exceeded {request.timeout_seconds}s")

    def cancel(self, run: Run) -> str | None:
        """Nothing to stop: a buildah build is a child of its worker and dies with it (its process
        group is killed on exit, and by the kernel when the worker is killed), and a worker that is
        alive stops it when it sees the cancel."""
        return None

    def build(self, request: BuildRequest, log: LogSink) -> BuildResult:
        # The task's registry credentials reach buildah in an auth file that lives as long as the build.
        with auth_file_args(request.credentials, self.work_dir) as auth:
            return self._build(request, log, auth)

    def _build(self, request: BuildRequest, log: LogSink, auth: list[str]) -> BuildResult:
        deadline = time.monotonic() + request.timeout_seconds
        context = request.context.path
        if shutil.which("buildah") is None:
            # The builder itself is broken, not the run: Error, as ACR reports infrastructure faults.
            return BuildResult(RunStatus.ERROR, reason="buildah is not installed on the worker")
        base_digests = {}
        for base in request.base_images:
            # The digest of the manifest this platform builds on (a manifest list's entry).
            digest = self.registry.resolve_digest(base, request.platform, request.credentials)
            if digest:
                base_digests[base] = digest
        pull = ["--pull=always", "--no-cache"] if request.no_cache else ["--pull=true"]
        argv = self._global() + ["bud", "--isolation", "chroot", *pull, *self._tls(), *auth,
                                 "--platform", normalized_or_given(request.platform),
                                 "-f", str(Path(context) / request.dockerfile)]
        for key, value in {**request.build_args, **request.secret_args}.items():
            argv += ["--build-arg", f"{key}={value}"]
        for image in request.images:
            argv += ["-t", image]
        argv.append(context)
        log(f"$ buildah bud -f {request.dockerfile} " + " ".join(f"-t {i}" for i in request.images))
        code = self._run(argv, log, deadline, request.cancel)
        if code is None:
            return self._stopped(request, base_digests)
        if code != 0:
            return BuildResult(RunStatus.FAILED, base_digests=base_digests,
                               reason=f"buildah bud exited with {code}")

        output_digest = None
        with tempfile.TemporaryDirectory() as tmp:
            digest_file = Path(tmp) / "digest"
            for image in request.images:
                if not request.still_ours():
                    log(f"not pushing {image}: another attempt has taken this run over")
                    return BuildResult(RunStatus.CANCELED, base_digests=base_digests,
                                       reason="taken over by another attempt before the push")
                log(f"$ buildah push {image}")
                code = self._run(
                    self._global() + ["push", *self._tls(), *auth, "--digestfile", str(digest_file),
                                      image, f"docker://{image}"],
                    log, deadline, request.cancel,
                )
                if code is None:
                    return self._stopped(request, base_digests)
                if code != 0:
                    return BuildResult(RunStatus.FAILED, base_digests=base_digests,
                                       reason=f"buildah push of {image} exited with {code}")
                output_digest = output_digest or digest_file.read_text().strip()
        return BuildResult(RunStatus.SUCCEEDED, output_digest=output_digest, base_digests=base_digests)
