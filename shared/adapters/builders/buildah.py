"""The local builder: buildah, daemonless, as argv lists (never a shell string).

`buildah bud` builds every tag of the run in one go, then `buildah push --digestfile` pushes each
tag and reports the manifest digest.

Secret args are build *secrets*, never build args: a build arg is written into the image's history
(`|2 S1=... /bin/sh -c ...`) and into buildah's command line, which every local user can read in
/proc. Each secret is a file (mode 0600, in a private folder of the work dir, removed right after
the build) handed over as `--secret id=NAME,src=FILE`; the Dockerfile reads it with
`RUN --mount=type=secret,id=NAME` from /run/secrets/NAME, which no layer keeps. A Dockerfile that
declares `ARG NAME` for a secret gets a warning (shared.domain.dockerfile.secret_arg_warnings) and
an empty ARG. The log writer still hides every secret value in case a build prints one.

A build leaves nothing behind, even when its worker is killed with SIGKILL:
- each buildah runs as the first process of a PID namespace of its own (`unshare --pid --fork
  --kill-child`) that dies with the worker (PR_SET_PDEATHSIG). When it dies, the kernel kills every
  process in the namespace, the RUN steps buildah's chroot isolation started included (they leave
  buildah's process group, so the group kill alone misses them);
- the working containers of a build are found by a marker build arg (`BASETRIGGER_BUILD`, buildah
  keeps build args with the container, never in the image) naming the worker that owns it (see
  `ownership`). They are removed when the build ends, however it ends, and once per process at
  start-up for owners that are provably dead, together with secret folders such an owner left.
  Containers of anyone else, or of a live owner, are never touched.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from shared.adapters.builders.ownership import Owner, new_marker, owner_of, processes_naming
from shared.adapters.builders.registry_auth import auth_file_args
from shared.domain.builds import BuildRequest, BuildResult, LogSink
from shared.domain.platforms import normalized_or_given
from shared.domain.rebase import BASE_DIGEST, BASE_NAME
from shared.domain.runs import Run
from shared.domain.vocabulary import BuilderKind, RunStatus, utc_now
from shared.service_layer.ports import Registry

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
# The build arg naming a build's working containers (see the module docstring).
MARKER_ARG = "BASETRIGGER_BUILD"
# buildah's note on build args no stage declared: the marker never is, so it is left out of it.
# The name of a rebase check's working container: this prefix and the check's marker (so the
# leftovers of a worker killed during a check are found as a build's are).
CHECK_CONTAINER_PREFIX = "basetrigger-check-"
_UNCONSUMED = re.compile(r"(\[Warning\] one or more build args were not consumed: \[)(.*)(\].*)", re.S)
# The PID namespace a build runs in; it dies with its first process, buildah.
_OWN_PID_NAMESPACE = ["unshare", "--pid", "--fork", "--kill-child"]
_started_up = False
_start_up_lock = threading.Lock()
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


def _pid_namespaces_work() -> bool:
    """Can this process start a build in a PID namespace of its own (CAP_SYS_ADMIN: root, as buildah
    with its storage in /var/lib/containers is)?"""
    if shutil.which("unshare") is None:
        return False
    try:
        return subprocess.run([*_OWN_PID_NAMESPACE, "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _without_marker(line: str) -> str | None:
    """buildah's output line, without the marker arg in its note on unused build args."""
    match = _UNCONSUMED.match(line)
    if not match:
        return line
    others = [name for name in match[2].split() if name != MARKER_ARG]
    return f"{match[1]}{' '.join(others)}{match[3]}" if others else None


class BuildahBuilder:
    # Secret args reach the build as build secrets (/run/secrets/NAME), never as build args.
    secret_args_as_build_args = False
    kind = BuilderKind.BUILDAH

    def __init__(self, registry: Registry, ca_file: str | None = None,
                 storage_driver: str = "vfs", work_dir: str = "/tmp/basetrigger"):
        self.registry = registry
        self.storage_driver = storage_driver
        self.work_dir = Path(work_dir)
        self.owner = Owner.this_process()
        self.own_pid_namespace = _pid_namespaces_work()
        if not self.own_pid_namespace:
            logger.warning("cannot start builds in a PID namespace of their own (unshare --pid needs "
                           "root): a RUN step may outlive a worker killed with SIGKILL")
        self._remove_leftovers_once()
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

    # ---- leftovers -------------------------------------------------------------------------
    def _remove_leftovers_once(self) -> None:
        """At the start of a process that builds: what builds of dead workers left behind."""
        global _started_up
        with _start_up_lock:
            if _started_up:
                return
            _started_up = True
        try:
            self.remove_leftovers_of_dead_owners()
        except Exception:  # a cleanup failure must not stop the builds
            logger.warning("could not look for the leftovers of dead builds", exc_info=True)

    def remove_leftovers_of_dead_owners(self) -> list[str]:
        """Remove the working containers and secret folders of builds whose worker is provably dead
        and that no live process names; the ids of the containers removed."""
        dead = {cid: marker for cid, marker in self._build_markers().items()
                if (owner := owner_of(marker)) is not None and not owner.is_alive()}
        still_used = processes_naming(set(dead.values()))
        removed = [cid for cid, marker in dead.items() if marker not in still_used and self._rm(cid)]
        if removed:
            logger.info("removed %d working containers of builds whose worker died", len(removed))
        secrets = self.work_dir / "secrets"
        if secrets.is_dir():
            for folder in secrets.iterdir():
                owner = owner_of(folder.name)
                if owner is not None and not owner.is_alive():
                    shutil.rmtree(folder, ignore_errors=True)
        return removed

    def _build_markers(self) -> dict[str, str]:
        """Container id -> build marker, for each working container a basetrigger build made.

        `buildah inspect` does not show a container's build args; buildah keeps them in the
        container's buildah.json (containers/storage: <graph root>/<driver>-containers/<id>/userdata).
        """
        for attempt in range(3):
            # The list can fail while another process creates or removes a container at that moment.
            listed = subprocess.run(self._global() + ["containers", "--json"], capture_output=True,
                                    text=True, timeout=120)
            if listed.returncode == 0:
                break
            logger.warning("buildah containers failed (attempt %d): %s", attempt + 1, listed.stderr.strip())
            time.sleep(1)
        listed.check_returncode()
        containers = json.loads(listed.stdout or "null") or []
        if not containers:
            return {}
        info = subprocess.run(self._global() + ["info", "--format", "{{.store.GraphRoot}}"],
                              capture_output=True, text=True, timeout=120, check=True)
        folder = Path(info.stdout.strip()) / f"{self.storage_driver}-containers"
        found = {}
        for container in containers:
            try:
                state = json.loads((folder / container["id"] / "userdata" / "buildah.json").read_text())
            except (OSError, ValueError, KeyError):
                continue  # removed meanwhile, or being created: not provably ours
            marker = (state.get("Args") or {}).get(MARKER_ARG)
            name = container.get("containername") or ""
            if marker is None and name.startswith(CHECK_CONTAINER_PREFIX):
                marker = name[len(CHECK_CONTAINER_PREFIX):]
            if isinstance(marker, str):
                found[container["id"]] = marker
        return found

    def _rm(self, container: str) -> bool:
        done = subprocess.run(self._global() + ["rm", container], capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            logger.warning("could not remove the working container %s: %s", container, done.stderr.strip())
        return done.returncode == 0

    def _remove_containers_of(self, marker: str) -> None:
        """A build's own working containers, once its buildah has ended (buildah removes them itself
        unless it was killed)."""
        try:
            for cid, found in self._build_markers().items():
                if found == marker:
                    self._rm(cid)
        except (subprocess.SubprocessError, OSError, ValueError):
            logger.warning("could not look for the working containers of a build", exc_info=True)

    @contextlib.contextmanager
    def _secret_files(self, secrets: dict[str, str], marker: str) -> Iterator[list[str]]:
        """`--secret` options for each secret: a file only this user can read, in a folder only this
        user can enter, removed as soon as the build ends (a dead worker's: at the next start-up)."""
        if not secrets:
            yield []
            return
        root = self.work_dir / "secrets"
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder = root / marker
        folder.mkdir(mode=0o700)
        try:
            options = []
            for name, value in secrets.items():  # names are checked: [A-Za-z_][A-Za-z0-9_]*
                path = folder / name
                with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
                    handle.write(value)
                options += ["--secret", f"id={name},src={path}"]
            yield options
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    # ---- processes ---------------------------------------------------------------------------
    def _run(self, argv: list[str], log: LogSink, deadline: float, cancel: threading.Event) -> int | None:
        """Run argv streaming its output to the log; None when stopped (deadline or cancel)."""
        # A process group of its own (killed whole: buildah and the RUN steps it started), tied to
        # this worker's life, in a PID namespace of its own that dies with buildah.
        if self.own_pid_namespace:
            argv = [*_OWN_PID_NAMESPACE, *argv]
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
                shown = _without_marker(line)
                if shown is not None:
                    log(shown)
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

    @staticmethod
    def _annotations(request: BuildRequest, base_digests: dict[str, str]) -> dict[str, str]:
        """The run's annotations, and the final stage's base with the digest it was resolved to
        (buildah keeps annotations in the OCI manifest it pushes)."""
        found = dict(request.annotations)
        if request.final_base:
            found[BASE_NAME] = request.final_base
            if request.final_base in base_digests:
                found[BASE_DIGEST] = base_digests[request.final_base]
        return found

    def check_image(self, image: str, argv: tuple[str, ...], request: BuildRequest,
                    log: LogSink) -> int | None:
        """A rebase check: argv run in `image` (pulled with the task's credentials), as a build's RUN
        runs (chroot isolation, a PID namespace of its own); its exit code, None when stopped. The
        working container is removed however it ends (a dead worker's: at the next start-up)."""
        deadline = time.monotonic() + request.timeout_seconds
        container = f"{CHECK_CONTAINER_PREFIX}{new_marker(self.owner)}"
        try:
            with auth_file_args(request.credentials, self.work_dir) as auth:
                code = self._run(self._global() + ["from", "--name", container, "--pull-always", *self._tls(),
                                                   *auth, f"docker://{image}"], log, deadline, request.cancel)
            if code != 0:
                return code
            return self._run(self._global() + ["run", "--isolation", "chroot", container, "--", *argv],
                             log, deadline, request.cancel)
        finally:
            self._remove_check_container(container)

    def _remove_check_container(self, name: str) -> None:
        """By its name, a few times: a removal can fail while other builds hold the storage's lock.
        One that was never made (`buildah from` failed) is not known: nothing to do."""
        for attempt in range(3):
            done = subprocess.run(self._global() + ["rm", name], capture_output=True, text=True, timeout=300)
            if done.returncode == 0 or "container not known" in done.stderr:
                return
            logger.warning("could not remove the check container %s (attempt %d): %s", name, attempt + 1,
                           done.stderr.strip())
            time.sleep(1)

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
        marker = new_marker(self.owner)
        with self._secret_files(request.secret_args, marker) as secrets:
            argv = self._global() + ["bud", "--isolation", "chroot", *pull, *self._tls(),
                                     *auth, *secrets, "--platform", normalized_or_given(request.platform),
                                     "-f", str(Path(context) / request.dockerfile)]
            for key, value in {**request.build_args, MARKER_ARG: marker}.items():
                argv += ["--build-arg", f"{key}={value}"]
            for key, value in self._annotations(request, base_digests).items():
                argv += ["--annotation", f"{key}={value}"]
            for image in request.images:
                argv += ["-t", image]
            argv.append(context)
            log(f"$ buildah bud -f {request.dockerfile} " + " ".join(f"-t {i}" for i in request.images)
                + "".join(f" --secret id={name}" for name in request.secret_args))
            try:
                code = self._run(argv, log, deadline, request.cancel)
            finally:
                self._remove_containers_of(marker)
        if code is None:
            return self._stopped(request, base_digests)
        if code != 0:
            return BuildResult(RunStatus.FAILED, base_digests=base_digests,
                               reason=f"buildah bud exited with {code}")

        built_at = utc_now()
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
        return BuildResult(RunStatus.SUCCEEDED, output_digest=output_digest, base_digests=base_digests,
                           built_at=built_at, pushed_at=utc_now())
