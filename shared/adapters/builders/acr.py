"""The cloud builder: a Docker build run on Azure Container Registry (`scheduleRun`, like `az acr build`).

The flow is the one `az acr build` uses: ask the registry for a source-upload URL (a blob SAS URL),
upload the build context there as a tar.gz (or hand ACR a git URL instead), schedule a
`DockerBuildRequest` run, then follow the run until it ends while reading its log blob through the
log SAS URL. ACR pushes the image itself, so the push arrives back through Event Grid like any other.

`scheduleRun` and `runs/{id}/cancel` are ARM long-running operations: ACR may answer 200 with the
result or 202 Accepted. The 1.0.0b1 client accepts only 200 and raises on 202, so both calls pass an
`error_map` that turns a 202 into `_Accepted`, and the builder then follows the run with `runs.get`
(or, for a 202 without the run in its body, the operation's Location).

One ACR run per basetrigger run, whatever the worker does: the ACR run's id is saved on the run
record as soon as it is scheduled (`BuildRequest.record_builder_run`), and the attempt that takes a
run over (a stale heartbeat, a crash) follows that ACR run instead of scheduling another. An ACR run
scheduled by an attempt that was taken over meanwhile, or whose id could not be saved, is canceled;
so is a run still queued or running when the follow deadline passes (it would push later), and one
whose basetrigger run was ended while no worker may follow it (`cancel(run)`: failed by
housekeeping or the poison handler, canceled by request or with its wave).

Runs moved out of `azure-mgmt-containerregistry` in its version 15 into
`azure-mgmt-containerregistrytasks`; this module uses the latter. The management client is injected
so tests can give it a transport that answers like the ACR REST API.

A task's username/password credentials go to the run as custom registry credentials, so it can pull
bases from private registries. Managed-identity credentials cannot: a quick run has no identity of
its own to name, so they are left out and the run's log says so (the run's own registry needs none).
"""

from __future__ import annotations

import logging
import os
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import IO, Any
from urllib.parse import quote, urlsplit, urlunsplit

from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
from azure.core.rest import HttpRequest, HttpResponse
from azure.mgmt.containerregistrytasks import ContainerRegistryTasksMgmtClient
from azure.mgmt.containerregistrytasks.models import (
    Argument,
    Credentials,
    CustomRegistryCredentials,
    DockerBuildRequest,
    PlatformProperties,
    Run,
    SecretObject,
    SecretObjectType,
)
from azure.storage.blob import BlobClient

from shared.config import ConfigError, Settings
from shared.domain.builds import BuildContext, BuildRequest, BuildResult, LogSink
from shared.domain.credentials import RegistryCredential
from shared.domain.images import has_registry
from shared.domain.runs import Run as RunRecord
from shared.domain.secrets import SecretMask
from shared.domain.vocabulary import BuilderKind, RunStatus

logger = logging.getLogger(__name__)

# ACR's run statuses that end a run, mapped onto the builder contract's statuses.
_TERMINAL = {
    "succeeded": RunStatus.SUCCEEDED,
    "failed": RunStatus.FAILED,
    "canceled": RunStatus.CANCELED,
    "error": RunStatus.ERROR,
    "timeout": RunStatus.TIMEOUT,
}
# The range ACR accepts for a run's timeout, in seconds.
ACR_MIN_TIMEOUT, ACR_MAX_TIMEOUT = 300, 28800
# A run may wait in ACR's queue before its own timeout starts counting; this is how long we wait
# beyond the run's timeout before giving up on following it. The build worker follows the run inside
# one function invocation, so timeout + allowance must stay under host.json's functionTimeout.
QUEUE_ALLOWANCE_SECONDS = 600
# Consecutive failed polls tolerated before the run is reported as Error.
MAX_POLL_FAILURES = 5
# How long to wait for an accepted (202) scheduleRun to name its run, and for a canceled run to
# end in ACR, before reporting what is known.
ACCEPT_PATIENCE_SECONDS = 120
CANCEL_PATIENCE_SECONDS = 120

BlobFromUrl = Callable[[str], BlobClient]


class _Refused(Exception):
    """The request cannot be built on ACR; the message says why and is safe to record."""


class _Accepted(HttpResponseError):
    """ACR answered 202 Accepted (raised by the client through `error_map`, carrying the response)."""


# Passed to schedule_run and runs.cancel: a 202 becomes _Accepted instead of a generic error.
_ACCEPTED = {202: _Accepted}


class AcrBuilder:
    """Builds a `BuildRequest` as an ACR quick-build run on one registry."""

    # ACR's secret arguments are build args whose values ACR keeps out of its logs: an `ARG` of one
    # reads it, and a RUN that uses it keeps it in the image's history (a DockerBuildRequest has no
    # build secrets).
    secret_args_as_build_args = True
    kind = BuilderKind.ACR

    def __init__(
        self,
        client: ContainerRegistryTasksMgmtClient,
        resource_group: str,
        registry_name: str,
        *,
        login_server: str | None = None,
        blob_from_url: BlobFromUrl = BlobClient.from_blob_url,
        poll_interval: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        resolve_digest: Callable[[str], str | None] | None = None,
    ) -> None:
        self._client = client
        self._resource_group = resource_group
        self._registry = registry_name
        # Public-cloud default; other clouds (or domain-name-label registries) pass theirs.
        self.login_server = (login_server or f"{registry_name}.azurecr.io").lower()
        self._blob_from_url = blob_from_url
        self._poll_interval = poll_interval
        self._sleep = sleep
        self._clock = clock
        # Reports which digest each base had when the run was scheduled (ACR's run record does not).
        self._resolve_digest = resolve_digest

    @classmethod
    def from_settings(cls, settings: Settings, credential: Any = None, **kwargs: Any) -> AcrBuilder:
        """The builder for the registry named by BASETRIGGER_ACR_* settings, as the app's identity."""
        subscription, group, name = (settings.acr_subscription_id, settings.acr_resource_group,
                                     settings.acr_name)
        if not (subscription and group and name):
            missing = [setting for setting, value in (("BASETRIGGER_ACR_SUBSCRIPTION_ID", subscription),
                                                      ("BASETRIGGER_ACR_RESOURCE_GROUP", group),
                                                      ("BASETRIGGER_ACR_NAME", name)) if not value]
            raise ConfigError(f"the ACR builder needs {', '.join(missing)}")
        if credential is None:
            from shared.adapters.credentials import credential_for

            credential = credential_for(settings)
        client = ContainerRegistryTasksMgmtClient(credential, subscription)
        # The Bicep sets BASETRIGGER_REGISTRY to the registry's login server (any cloud, any DNS form).
        kwargs.setdefault("login_server", settings.registry_host)
        return cls(client, group, name, **kwargs)

    # -- the Builder protocol ---------------------------------------------------------------------

    def build(self, request: BuildRequest, log: LogSink) -> BuildResult:
        mask = SecretMask(_secrets_of(request))
        emit = _masking(log, mask)
        try:
            run_request = self._run_request(request, emit)
        except _Refused as exc:
            reason = mask(str(exc))
            emit(f"ACR build refused: {reason}")
            return BuildResult(status=RunStatus.ERROR, reason=reason)
        base_digests = self._base_digests(request.base_images)
        started = self._reattach(request, emit) or self._start(request, run_request, emit, mask)
        if isinstance(started, BuildResult):
            return replace(started, base_digests=base_digests)
        acr_run_id, run = started
        result = self._follow(acr_run_id, run, run_request.timeout or ACR_MAX_TIMEOUT, emit, request.cancel)
        return BuildResult(
            status=result.status,
            output_digest=result.output_digest,
            base_digests=base_digests,
            reason=mask(result.reason) if result.reason else result.reason,
        )

    def cancel(self, run: RunRecord) -> str | None:
        """Cancels the ACR run an attempt of `run` scheduled, for a run ended while no worker may be
        following it (a dead worker would never cancel it, and it would push). Does not wait for
        ACR to stop it. Never raises: None when ACR took the cancel or the run had ended already,
        else why not (that run may still push its images)."""
        if not run.builder_run_id:
            return None
        return self._request_cancel(run.builder_run_id)

    def _start(self, request: BuildRequest, run_request: DockerBuildRequest, emit: LogSink,
               mask: SecretMask) -> tuple[str, Any] | BuildResult:
        """Uploads the context and schedules the run: its id and Run, or why it did not start."""
        if not request.still_ours():
            reason = "another attempt took this run over before its ACR run was scheduled"
            emit(reason)
            return BuildResult(status=RunStatus.CANCELED, reason=reason)
        try:
            run_request.source_location = self._source_location(request.context)
            run = self._schedule(run_request)
        except _Refused as exc:
            reason = mask(str(exc))
            emit(f"ACR build refused: {reason}")
            return BuildResult(status=RunStatus.ERROR, reason=reason)
        except (AzureError, OSError) as exc:
            reason = mask(f"could not schedule an ACR run on {self._registry}: {_short(exc)}")
            emit(reason)
            return BuildResult(status=RunStatus.ERROR, reason=reason)
        acr_run_id = str(run.run_id or run.name)
        logger.info("run %s: scheduled ACR run %s on %s", request.run_id, acr_run_id, self._registry)
        emit(
            f"ACR run {acr_run_id} scheduled on {self._registry} "
            f"(source {request.context.describe()}, images {', '.join(run_request.image_names or [])})"
        )
        taken_over = self._keep(request, acr_run_id, emit)
        if taken_over is not None:
            return BuildResult(status=RunStatus.CANCELED, reason=taken_over)
        return acr_run_id, run

    def _reattach(self, request: BuildRequest, emit: LogSink) -> tuple[str, Any] | None:
        """The ACR run an earlier attempt scheduled (its id and Run), to follow instead of scheduling a
        second one that would push too; None when there is none. Errors other than ACR not knowing
        the run propagate: the queue delivers the run again and that attempt tries again."""
        acr_run_id = request.builder_run_id
        if not acr_run_id:
            return None
        try:
            run = self._client.runs.get(self._resource_group, self._registry, acr_run_id)
        except ResourceNotFoundError:
            emit(f"ACR run {acr_run_id} of an earlier attempt is not in {self._registry}: "
                 "scheduling a new one")
            return None
        emit(f"following ACR run {acr_run_id}, scheduled by an earlier attempt of this run "
             f"({_status_of(run)}): no second run is scheduled")
        return acr_run_id, run

    def _keep(self, request: BuildRequest, acr_run_id: str, emit: LogSink) -> str | None:
        """Saves the ACR run's id on the run record. If another attempt took the run over meanwhile
        (or the id cannot be saved, so no later attempt could find the run), the ACR run is canceled:
        only the attempt that owns the record may push. Returns the reason when it was canceled."""
        try:
            kept = request.record_builder_run(acr_run_id)
        except Exception:
            self._cancel(acr_run_id, emit, _LogFollower(self._blob_from_url, emit))
            raise
        if kept:
            return None
        note = self._cancel(acr_run_id, emit, _LogFollower(self._blob_from_url, emit))
        return (f"another attempt took this run over: its ACR run {acr_run_id} was canceled"
                + (f"; {note}" if note else ""))

    def _base_digests(self, bases: list[str]) -> dict[str, str]:
        digests: dict[str, str] = {}
        if self._resolve_digest is None:
            return digests
        for base in bases:
            try:
                digest = self._resolve_digest(base)
            except Exception as exc:  # a lookup failure must not stop the build
                logger.warning("could not resolve %s: %s", base, _short(exc))
                continue
            if digest:
                digests[base] = digest
        return digests

    # -- request ----------------------------------------------------------------------------------

    def _run_request(self, request: BuildRequest, emit: LogSink) -> DockerBuildRequest:
        images = [self._image_name(image) for image in request.images]
        arguments = [Argument(name=k, value=v, is_secret=False) for k, v in request.build_args.items()]
        arguments += [Argument(name=k, value=v, is_secret=True) for k, v in request.secret_args.items()]
        return DockerBuildRequest(
            image_names=images,
            is_push_enabled=bool(images),
            no_cache=request.no_cache,
            docker_file_path=request.dockerfile or "Dockerfile",
            arguments=arguments,
            platform=_platform(request.platform),
            timeout=max(ACR_MIN_TIMEOUT, min(ACR_MAX_TIMEOUT, int(request.timeout_seconds))),
            credentials=self._credentials(request.credentials, emit),
        )

    def _credentials(self, credentials: Iterable[RegistryCredential], emit: LogSink) -> Credentials | None:
        """The task's credentials as ACR custom registry credentials (None when there are none).

        The run signs in to its own registry itself. A managed-identity credential would need an
        identity on the run (a client id or `[system]`); a quick run has none, so it is left out."""
        custom: dict[str, CustomRegistryCredentials] = {}
        for credential in credentials:
            if credential.login_server == self.login_server:
                continue
            if credential.use_identity:
                emit(f"registry credential for {credential.login_server} not used: it signs in with the "
                     "app's managed identity, which an ACR quick run cannot use")
                continue
            if not (credential.username and credential.password):
                emit(f"registry credential for {credential.login_server} not used: it has no password")
                continue
            # Keyed by the login server as normalize_login_server names it (Docker Hub: docker.io;
            # not verified against ACR, see docs/deploy.md).
            custom[credential.login_server] = CustomRegistryCredentials(
                user_name=SecretObject(type=SecretObjectType.OPAQUE, value=credential.username),
                password=SecretObject(type=SecretObjectType.OPAQUE, value=credential.password),
            )
        return Credentials(custom_registries=custom) if custom else None

    def _image_name(self, image: str) -> str:
        """ACR takes `repo:tag` relative to the registry; a reference to another registry is refused."""
        host, _, rest = image.partition("/")
        if has_registry(image):
            if host.lower() != self.login_server:
                raise _Refused(
                    f"image {image!r} is not in {self.login_server}; an ACR run pushes only to its own "
                    "registry"
                )
            return rest
        return image

    def _source_location(self, context: BuildContext) -> str:
        if context.git_url:
            return _git_location(context)
        upload = self._client.registries.get_build_source_upload_url(self._resource_group, self._registry)
        if not upload.upload_url or not upload.relative_path:
            raise _Refused("ACR returned no source-upload URL")
        with tempfile.TemporaryFile() as archive:
            _tar_directory(context.path, archive)
            size = archive.tell()
            archive.seek(0)
            blob = self._blob_from_url(upload.upload_url)
            blob.upload_blob(archive, length=size, overwrite=True, blob_type="BlockBlob")
        return upload.relative_path

    # -- following the run ------------------------------------------------------------------------

    def _follow(self, acr_run_id: str, run: Any, timeout: int, emit: LogSink,
                request_cancel: threading.Event) -> BuildResult:
        follower = _LogFollower(self._blob_from_url, emit)
        patience = timeout + QUEUE_ALLOWANCE_SECONDS
        deadline = self._clock() + patience
        failures = 0
        while True:
            status = _status_of(run)
            if follower.url is None:
                follower.url = self._log_url(acr_run_id)
            follower.poll()
            if status.lower() in _TERMINAL:
                break
            if request_cancel.is_set():
                # The run was canceled here: cancel it in ACR too, so it pushes nothing.
                note = self._cancel(acr_run_id, emit, follower)
                return BuildResult(status=RunStatus.CANCELED,
                                   reason="canceled by request" + (f"; {note}" if note else ""))
            if self._clock() > deadline:
                # Canceled, not abandoned: a run still queued in ACR would push later and trigger
                # rebuilds of everything built on its image.
                overdue = f"ACR run {acr_run_id} was still {status} after {patience} s"
                emit(overdue)
                note = self._cancel(acr_run_id, emit, follower)
                return BuildResult(status=RunStatus.TIMEOUT,
                                   reason=overdue + (f"; {note}" if note else "; canceled in ACR"))
            self._sleep(self._poll_interval)
            try:
                run = self._client.runs.get(self._resource_group, self._registry, acr_run_id)
                failures = 0
            except AzureError as exc:
                failures += 1
                logger.warning(
                    "ACR run %s: poll %s/%s failed: %s", acr_run_id, failures, MAX_POLL_FAILURES, _short(exc)
                )
                if failures >= MAX_POLL_FAILURES:
                    follower.flush()
                    lost = f"lost track of ACR run {acr_run_id}: {_short(exc)}"
                    emit(lost)
                    return BuildResult(status=RunStatus.ERROR, reason=lost)
        if follower.url is None:
            follower.url = self._log_url(acr_run_id)
        follower.poll()
        follower.flush()
        result_status = _TERMINAL[status.lower()]
        digest: str | None = None
        for image in getattr(run, "output_images", None) or []:
            if image.digest:
                digest = image.digest
                break
        reason: str | None = None
        if result_status != RunStatus.SUCCEEDED:
            reason = getattr(run, "run_error_message", None) or f"ACR run {acr_run_id} ended {status}"
        emit(f"ACR run {acr_run_id}: {status}" + (f" ({digest})" if digest else ""))
        return BuildResult(status=result_status, output_digest=digest, reason=reason)

    def _schedule(self, run_request: DockerBuildRequest) -> Any:
        """scheduleRun; the Run, whether ACR answered 200 (the run) or 202 (accepted)."""
        try:
            return self._client.registries.schedule_run(self._resource_group, self._registry, run_request,
                                                         error_map=_ACCEPTED)
        except _Accepted as accepted:
            assert accepted.response is not None  # the client raises it from a response
            return self._accepted_run(accepted.response)

    def _accepted_run(self, response: Any) -> Run:
        """The run a 202 scheduleRun stands for: from its body when it names the run (runs.get follows
        it like any other), else from the operation's Location (or Azure-AsyncOperation), polled until
        it names the run."""
        run = _run_in(response)
        if run is not None:
            return run
        url = response.headers.get("Location") or response.headers.get("Azure-AsyncOperation")
        if not url:
            raise _Refused("ACR accepted the run (202) but named neither the run nor an operation to poll")
        deadline = self._clock() + ACCEPT_PATIENCE_SECONDS
        failures = 0
        while self._clock() <= deadline:
            self._sleep(_retry_after(response, self._poll_interval))
            try:
                response = self._client.send_request(HttpRequest("GET", url))
            except AzureError as exc:
                failures += 1
                if failures >= MAX_POLL_FAILURES:
                    raise _Refused(f"ACR accepted the run (202), then polling it failed: "
                                   f"{_short(exc)}") from exc
                continue
            failures = 0
            run = _run_in(response)
            if run is not None:
                return run
            if response.status_code == 202:
                continue
            status = str(_json_of(response).get("status") or "")
            if response.status_code >= 400 or status.lower() in ("failed", "canceled"):
                raise _Refused(f"ACR accepted the run (202), then the operation ended "
                               f"{status or response.status_code}: {_short_body(response)}")
        raise _Refused(f"ACR accepted the run (202) but did not name it within {ACCEPT_PATIENCE_SECONDS} s")

    def _cancel(self, acr_run_id: str, emit: LogSink, follower: _LogFollower) -> str | None:
        """Cancels the ACR run and waits (bounded) until ACR reports it ended. Never raises: a cancel
        ACR refuses or does not carry out is written to the run's log and returned as a note for the
        result's reason, since that run may still push its images."""
        note = self._request_cancel(acr_run_id)
        if note is not None:
            logger.warning("%s", note)
            follower.poll()
            follower.flush()
            emit(note)
            return note
        deadline = self._clock() + CANCEL_PATIENCE_SECONDS
        failures = 0
        status = "unknown"
        while True:
            try:
                run = self._client.runs.get(self._resource_group, self._registry, acr_run_id)
                status, failures = _status_of(run), 0
            except AzureError as exc:
                failures += 1
                logger.warning("ACR run %s: poll after cancel failed: %s", acr_run_id, _short(exc))
            follower.poll()
            if status.lower() in _TERMINAL or failures >= MAX_POLL_FAILURES or self._clock() > deadline:
                break
            self._sleep(self._poll_interval)
        follower.flush()
        if status.lower() == "canceled":
            emit(f"ACR run {acr_run_id}: Canceled")
            return None
        if status.lower() in _TERMINAL:
            note = f"ACR run {acr_run_id} ended {status} before the cancel took effect"
        else:
            note = f"ACR run {acr_run_id} was still {status} after the cancel: it may still push its images"
        logger.warning("%s", note)
        emit(note)
        return note

    def _request_cancel(self, acr_run_id: str) -> str | None:
        """Asks ACR to cancel the run. None when it took the request (200 or 202), or refused it for
        a run that had ended already (canceled from elsewhere meanwhile, or finished); else why the
        run may still push its images. Never raises."""
        try:
            self._client.runs.cancel(self._resource_group, self._registry, acr_run_id, error_map=_ACCEPTED)
            return None
        except _Accepted:
            return None  # accepted: the run's own status says when it is done
        except AzureError as exc:
            refused = exc
        try:
            status = _status_of(self._client.runs.get(self._resource_group, self._registry, acr_run_id))
        except AzureError:
            status = "unknown"
        if status.lower() in _TERMINAL:
            return None
        return f"canceling ACR run {acr_run_id} failed ({_short(refused)}): it may still push its images"

    def _log_url(self, acr_run_id: str) -> str | None:
        try:
            result = self._client.runs.get_log_sas_url(self._resource_group, self._registry, acr_run_id)
        except AzureError as exc:
            logger.warning("ACR run %s: no log URL yet: %s", acr_run_id, _short(exc))
            return None
        return result.log_link or None


class _LogFollower:
    """Reads a run's log blob from where it last stopped and emits whole lines."""

    def __init__(self, blob_from_url: BlobFromUrl, emit: LogSink) -> None:
        self.url: str | None = None
        self._blob_from_url = blob_from_url
        self._emit = emit
        self._offset = 0
        self._pending = b""

    def poll(self) -> None:
        if not self.url:
            return
        try:
            data = self._blob_from_url(self.url).download_blob(offset=self._offset).readall()
        except ResourceNotFoundError:
            return  # ACR creates the log blob when the run starts
        except HttpResponseError as exc:
            if exc.status_code == 416:  # nothing past the offset yet
                return
            logger.warning("reading an ACR run log failed: %s", _short(exc))
            return
        except AzureError as exc:
            logger.warning("reading an ACR run log failed: %s", _short(exc))
            return
        self._offset += len(data)
        lines = (self._pending + data).split(b"\n")
        self._pending = lines.pop()
        for line in lines:
            self._emit(line.rstrip(b"\r").decode("utf-8", errors="replace"))

    def flush(self) -> None:
        if self._pending:
            self._emit(self._pending.rstrip(b"\r").decode("utf-8", errors="replace"))
            self._pending = b""


def _secrets_of(request: BuildRequest) -> list[str]:
    """Every secret a request carries: secret build args, the git token, registry passwords."""
    passwords = [c.password for c in request.credentials]
    return [v for v in [*request.secret_args.values(), request.context.git_token, *passwords] if v]


def _masking(log: LogSink, mask: SecretMask) -> LogSink:
    """A sink that never lets a secret's value through, whatever the build prints."""
    return lambda line: log(mask(line))


def _status_of(run: Any) -> str:
    status = getattr(run, "status", None)
    return str(getattr(status, "value", status) or "Queued")


def _json_of(response: HttpResponse) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:  # empty or not JSON
        return {}
    return body if isinstance(body, dict) else {}


def _run_in(response: HttpResponse) -> Run | None:
    """The Run a response body holds, if it names one (a Run resource has properties.runId)."""
    body = _json_of(response)
    properties = body.get("properties")
    if response.status_code < 400 and isinstance(properties, dict) and properties.get("runId"):
        return Run(body)
    return None


def _retry_after(response: HttpResponse, default: float) -> float:
    try:
        return min(float(response.headers.get("Retry-After", default)), 60.0)
    except ValueError:
        return default


def _short_body(response: HttpResponse) -> str:
    error = _json_of(response).get("error")
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])[:500]
    return f"HTTP {response.status_code}"


def _platform(spec: str) -> PlatformProperties:
    parts = [p for p in (spec or "linux").lower().split("/") if p]
    os_name = {"linux": "Linux", "windows": "Windows"}.get(parts[0] if parts else "linux")
    if os_name is None:
        raise _Refused(f"platform {spec!r} is not one ACR builds for (linux or windows)")
    return PlatformProperties(
        os=os_name,
        architecture=parts[1] if len(parts) > 1 else None,
        variant=parts[2] if len(parts) > 2 else None,
    )


def _git_location(context: BuildContext) -> str:
    """ACR's git context form, `https://host/repo.git#branch`, or `#<commit>` for a run of one
    commit (ACR's documented "GitHub commit" context location, `repo.git#<commit sha>:folder`; the
    full SHA, as the source triggers record it), with the token as URL credentials."""
    url = context.git_url or ""
    if context.git_token:
        parts = urlsplit(url)
        if parts.scheme != "https":
            raise _Refused("a git token is only sent over https")
        host = parts.netloc.rsplit("@", 1)[-1]
        netloc = f"x-access-token:{quote(context.git_token, safe='')}@{host}"
        url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    ref = context.commit or context.branch
    if ref and "#" not in url:
        url = f"{url}#{ref}"
    return url


def _tar_directory(root: str, out: IO[bytes]) -> None:
    """The context directory as the tar.gz ACR expects."""
    # Everything but .git is sent: ACR's docker build applies .dockerignore itself.
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d != ".git")
            rel_dir = os.path.relpath(dirpath, root)
            if rel_dir != ".":
                tar.add(dirpath, arcname=rel_dir, recursive=False)
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                tar.add(full, arcname=os.path.normpath(os.path.join(rel_dir, name)), recursive=False)


def _short(exc: BaseException) -> str:
    """An error's first line: enough to act on, without dumping response bodies into run logs."""
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return text.strip().splitlines()[0][:500]
