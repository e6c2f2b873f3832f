"""The distribution (OCI) registry API for any registry: which manifest a tag points at.

- `HEAD /v2/<name>/manifests/<tag>` answers the digest and media type without a body; only a
  manifest list / OCI index whose platforms are wanted is then read (`GET` by digest).
- Authentication follows the registry's challenge: `Bearer realm=…,service=…` is the token flow
  (an anonymous token, or one bought with basic credentials), `Basic` sends the credentials as
  they are. Tokens are kept per registry, repository and credential until they expire.
- Docker Hub is asked at its API host (`registry-1.docker.io`); its official images are
  `library/<name>`, which `ImageRef.parse` already spells out.
- 429, and 503 with `Retry-After`, become `RegistryError(RATE_LIMITED, retry_after=…)`: the poller
  backs the registry off for that long; `resolve_digest` waits once if the wait is short.

Credentials and tokens never reach a log line, an exception message or a repr.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from email.utils import parsedate_to_datetime
from typing import Any

import requests

from shared.domain.credentials import DOCKER_HUB, RegistryCredential
from shared.domain.events import MalformedEvent, check_digest
from shared.domain.image_ref import ImageRef
from shared.domain.manifests import Failure, ManifestInfo, RawManifest, RegistryError
from shared.domain.platforms import INDEX_MEDIA_TYPES, index_platforms

log = logging.getLogger(__name__)

MANIFEST_ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])
API_HOSTS = {DOCKER_HUB: "registry-1.docker.io"}
LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")
# An index is a few KiB; anything far larger is not one we should parse.
MAX_INDEX_BYTES = 4 * 1024 * 1024
# Tokens are renewed this long before the registry says they expire.
TOKEN_MARGIN_SECONDS = 10
DEFAULT_TOKEN_SECONDS = 60
MAX_RETRY_AFTER_SECONDS = 3600.0


def api_host(registry: str) -> str:
    return API_HOSTS.get(registry, registry)


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_SECONDS)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(max(moment.timestamp() - time.time(), 0.0), MAX_RETRY_AFTER_SECONDS)


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="…",service="…",scope="…"` -> ("bearer", {...}); quoted commas survive."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    key, value, quoted, in_value = "", "", False, False
    for ch in rest + ",":
        if in_value:
            if ch == '"':
                quoted = not quoted
            elif ch == "," and not quoted:
                params[key.strip().lower()] = value
                key, value, in_value = "", "", False
            else:
                value += ch
        elif ch == "=":
            in_value = True
        elif ch != ",":
            key += ch
    return scheme.lower(), params


class DistributionClient:
    def __init__(self, ca_file: str | None = None, timeout: float = 10.0, pool_size: int = 64,
                 session: requests.Session | None = None):
        self.ca_file = ca_file
        self.timeout = timeout
        if session is None:
            session = requests.Session()
            # Many bases are checked in parallel: one kept-alive connection per worker thread.
            adapter = requests.adapters.HTTPAdapter(pool_connections=16, pool_maxsize=pool_size)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
        self.session = session
        self._tokens: dict[tuple[str, str, str], tuple[str, float]] = {}
        self._lock = threading.Lock()

    def _verify(self, registry: str) -> str | bool:
        # Our own CA only for local registries; public registries use the system store.
        if self.ca_file and registry.rsplit(":", 1)[0] in LOCAL_HOSTS:
            return self.ca_file
        return True

    # ---- the API -----------------------------------------------------------------------------
    def inspect(self, reference: str, credential: RegistryCredential | None = None,
                with_platforms: bool = False) -> ManifestInfo:
        """The manifest `reference` points at (RegistryError when it cannot be read)."""
        ref = ImageRef.parse(reference)
        target = ref.digest or ref.tag or "latest"
        response = self._request("HEAD", ref, f"manifests/{target}", credential)
        digest = response.headers.get("Docker-Content-Digest") or ref.digest
        media_type = (response.headers.get("Content-Type") or "").split(";")[0].strip() or None
        if media_type in INDEX_MEDIA_TYPES and with_platforms:
            return self._index(ref, digest or target, credential)
        if not digest:
            # A HEAD without the header (allowed by the spec): the body's digest is the answer.
            return self._index(ref, target, credential)
        return ManifestInfo(self._digest(digest, reference), media_type)

    def _index(self, ref: ImageRef, target: str, credential: RegistryCredential | None) -> ManifestInfo:
        response = self._request("GET", ref, f"manifests/{target}", credential)
        body = response.content
        if len(body) > MAX_INDEX_BYTES:
            raise RegistryError(Failure.ERROR, f"{ref.name}: the manifest is larger than "
                                f"{MAX_INDEX_BYTES} bytes")
        computed = "sha256:" + hashlib.sha256(body).hexdigest()
        digest = response.headers.get("Docker-Content-Digest") or computed
        media_type = (response.headers.get("Content-Type") or "").split(";")[0].strip() or None
        try:
            document: Any = json.loads(body)
        except ValueError:
            raise RegistryError(Failure.ERROR, f"{ref.name}: the manifest is not JSON") from None
        if not isinstance(document, dict):
            raise RegistryError(Failure.ERROR, f"{ref.name}: the manifest is not a JSON object")
        media_type = media_type or document.get("mediaType")
        found = index_platforms(document) if media_type in INDEX_MEDIA_TYPES else {}
        return ManifestInfo(self._digest(digest, str(ref)), media_type, found)

    def stream_blob(self, reference: str, digest: str,
                    credential: RegistryCredential | None = None) -> requests.Response:
        """A streamed answer for one blob of the repository of `reference` (the caller closes it;
        its `raw` reads the blob's bytes as stored)."""
        ref = ImageRef.parse(reference)
        return self._request("GET", ref, f"blobs/{self._digest(digest, reference)}", credential, stream=True)

    @staticmethod
    def _digest(value: str, reference: str) -> str:
        try:
            return check_digest(value)
        except MalformedEvent:
            raise RegistryError(Failure.ERROR, f"{reference}: the registry answered a malformed digest") \
                from None

    # ---- requests and authentication ---------------------------------------------------------
    def _request(self, method: str, ref: ImageRef, path: str, credential: RegistryCredential | None,
                 *, ok: tuple[int, ...] = (200,), headers: dict[str, str] | None = None,
                 data: bytes | None = None, url: str | None = None,
                 stream: bool = False) -> requests.Response:
        """One API call, signed in as the registry's challenge asks. A write asks for a token of its
        own (push scope): one cached for reading would be refused."""
        host = api_host(ref.registry)
        url = url or f"https://{host}/v2/{ref.repository}/{path}"
        writes = method not in ("GET", "HEAD")
        cache_key = (host, ref.repository + ("\0push" if writes else ""), _credential_key(credential))
        headers = {"Accept": MANIFEST_ACCEPT, **(headers or {})}
        token = self._cached_token(cache_key)
        if token:
            headers["Authorization"] = token
        response = self._send(method, url, headers, ref.registry, data=data, stream=stream)
        if response.status_code == 401:
            response.close()
            authorization = self._authorize(response, ref, credential)
            self._store_token(cache_key, authorization)
            headers["Authorization"] = authorization[0]
            response = self._send(method, url, headers, ref.registry, data=data, stream=stream)
            if response.status_code == 401:
                raise RegistryError(Failure.UNAUTHORIZED, _refused(ref, credential))
        return self._check(response, ref, ok)

    # ---- reading and writing images (the rebase builder) --------------------------------------
    def manifest(self, reference: str, credential: RegistryCredential | None = None) -> RawManifest:
        """The manifest `reference` points at, as stored (its bytes are what its digest is of); read
        as a stream, so a registry answering an endless body fills no memory."""
        ref = ImageRef.parse(reference)
        target = ref.digest or ref.tag or "latest"
        with self._request("GET", ref, f"manifests/{target}", credential, stream=True) as response:
            body = response.raw.read(MAX_INDEX_BYTES + 1, decode_content=True)
            media_type = (response.headers.get("Content-Type") or "").split(";")[0].strip() or None
        if len(body) > MAX_INDEX_BYTES:
            raise RegistryError(Failure.ERROR,
                                f"{ref.name}: the manifest is larger than {MAX_INDEX_BYTES} bytes")
        computed = "sha256:" + hashlib.sha256(body).hexdigest()
        if ref.digest and ref.digest != computed:
            raise RegistryError(Failure.ERROR, f"{ref.name}: the manifest does not match its digest")
        return RawManifest(computed, media_type, body)

    def blob(self, reference: str, digest: str, credential: RegistryCredential | None = None) -> bytes:
        """A (small) blob's bytes, checked against its digest: a config, never a layer."""
        ref = ImageRef.parse(reference)
        body = self._request("GET", ref, f"blobs/{digest}", credential).content
        if "sha256:" + hashlib.sha256(body).hexdigest() != digest:
            raise RegistryError(Failure.ERROR, f"{ref.name}: the blob {digest} does not match its digest")
        return body

    def has_blob(self, reference: str, digest: str, credential: RegistryCredential | None = None) -> bool:
        ref = ImageRef.parse(reference)
        return self._request("HEAD", ref, f"blobs/{digest}", credential, ok=(200, 404)).status_code == 200

    def mount_blob(self, reference: str, digest: str, source_repository: str,
                   credential: RegistryCredential | None = None) -> bool:
        """Mount a blob of another repository of the same registry into `reference`'s: nothing is
        downloaded or uploaded. False when the registry would rather take an upload (202)."""
        ref = ImageRef.parse(reference)
        response = self._request("POST", ref, f"blobs/uploads/?mount={digest}&from={source_repository}",
                                 credential, ok=(201, 202))
        if response.status_code == 202:  # an upload session was opened instead: drop it
            self._cancel_upload(ref, response, credential)
            return False
        return True

    def upload_blob(self, reference: str, data: bytes, credential: RegistryCredential | None = None) -> str:
        """A monolithic upload (POST, then PUT with the bytes); the blob's digest."""
        ref = ImageRef.parse(reference)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        started = self._request("POST", ref, "blobs/uploads/", credential, ok=(202,))
        location = self._location(ref, started)
        separator = "&" if "?" in location else "?"
        self._request("PUT", ref, "", credential, ok=(201,), url=f"{location}{separator}digest={digest}",
                      headers={"Content-Type": "application/octet-stream"}, data=data)
        return digest

    def put_manifest(self, reference: str, body: bytes, media_type: str,
                     credential: RegistryCredential | None = None) -> str:
        """Store `body` under `reference`'s tag (or digest); the manifest's digest."""
        ref = ImageRef.parse(reference)
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        self._request("PUT", ref, f"manifests/{ref.digest or ref.tag or 'latest'}", credential, ok=(201,),
                      headers={"Content-Type": media_type}, data=body)
        return digest

    def _location(self, ref: ImageRef, response: requests.Response) -> str:
        location = response.headers.get("Location") or ""
        if location.startswith("/"):
            location = f"https://{api_host(ref.registry)}{location}"
        if not location.startswith("https://"):
            raise RegistryError(Failure.ERROR, f"{ref.registry} gave no upload location")
        return location

    def _cancel_upload(self, ref: ImageRef, response: requests.Response,
                       credential: RegistryCredential | None) -> None:
        try:
            self._request("DELETE", ref, "", credential, ok=(204, 404), url=self._location(ref, response))
        except RegistryError:
            pass  # the registry expires abandoned upload sessions anyway

    def _send(self, method: str, url: str, headers: dict[str, str], registry: str,
              **kwargs: Any) -> requests.Response:
        try:
            return self.session.request(method, url, headers=headers, timeout=self.timeout,
                                        verify=self._verify(registry), allow_redirects=True, **kwargs)
        except requests.RequestException as exc:
            raise RegistryError(Failure.UNREACHABLE,
                                f"cannot reach {registry}: {_describe(exc)}") from None

    @staticmethod
    def _check(response: requests.Response, ref: ImageRef, ok: tuple[int, ...] = (200,)) -> requests.Response:
        status = response.status_code
        if status in ok:
            return response
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if status == 429 or (status == 503 and retry_after is not None):
            raise RegistryError(Failure.RATE_LIMITED,
                                f"{ref.registry} asks to slow down ({status}"
                                + (f", retry after {retry_after:.0f} s)" if retry_after is not None else ")"),
                                retry_after=retry_after)
        if status == 404:
            raise RegistryError(Failure.NOT_FOUND, f"{ref} does not exist (404)")
        if status == 403:
            raise RegistryError(Failure.UNAUTHORIZED, f"{ref.registry} denies access to {ref.name} (403)")
        raise RegistryError(Failure.ERROR, f"{ref.registry} answered {status} for {ref}")

    def _authorize(self, challenge_response: requests.Response, ref: ImageRef,
                   credential: RegistryCredential | None) -> tuple[str, float]:
        """The Authorization header value the challenge asks for, and until when it holds."""
        scheme, params = parse_challenge(challenge_response.headers.get("WWW-Authenticate", ""))
        basic = (credential.username or "", credential.password or "") \
            if credential and credential.username else None
        if scheme == "basic":
            if basic is None:
                raise RegistryError(Failure.UNAUTHORIZED,
                                    f"{ref.registry} needs credentials: add them to the task with "
                                    f"`basetrigger task credential add --login-server {ref.registry}`")
            header = requests.auth._basic_auth_str(*basic)
            return header, time.monotonic() + 3600
        if scheme != "bearer" or not params.get("realm"):
            raise RegistryError(Failure.UNAUTHORIZED, f"{ref.registry} asks for an unsupported "
                                f"authentication scheme ({scheme or 'none'})")
        query = {"service": params.get("service", ""),
                 "scope": params.get("scope") or f"repository:{ref.repository}:pull"}
        try:
            response = self.session.get(params["realm"], params=query, auth=basic,
                                        timeout=self.timeout, verify=self._verify(ref.registry))
        except requests.RequestException as exc:
            raise RegistryError(Failure.UNREACHABLE, f"cannot reach the token service of {ref.registry}: "
                                f"{_describe(exc)}") from None
        if response.status_code in (401, 403):
            raise RegistryError(Failure.UNAUTHORIZED, _refused(ref, credential))
        self._check(response, ref)
        try:
            body = response.json()
        except ValueError:
            raise RegistryError(Failure.ERROR, f"the token service of {ref.registry} answered no JSON") \
                from None
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise RegistryError(Failure.ERROR, f"the token service of {ref.registry} gave no token")
        expires = body.get("expires_in")
        seconds = float(expires) if isinstance(expires, int | float) and expires > 0 \
            else DEFAULT_TOKEN_SECONDS
        return f"Bearer {token}", time.monotonic() + max(seconds - TOKEN_MARGIN_SECONDS, 1.0)

    def _cached_token(self, key: tuple[str, str, str]) -> str | None:
        with self._lock:
            entry = self._tokens.get(key)
        if entry and entry[1] > time.monotonic():
            return entry[0]
        return None

    def _store_token(self, key: tuple[str, str, str], value: tuple[str, float]) -> None:
        with self._lock:
            if len(self._tokens) > 50_000:  # a bound, not a policy: tokens are short-lived anyway
                self._tokens.clear()
            self._tokens[key] = value


def _credential_key(credential: RegistryCredential | None) -> str:
    """A cache key for a credential that holds no secret in the clear (a changed password is a new key)."""
    if credential is None or not credential.username:
        return ""
    material = f"{credential.username}\0{credential.password or ''}".encode()
    return hashlib.sha256(material).hexdigest()


def _refused(ref: ImageRef, credential: RegistryCredential | None) -> str:
    if credential and credential.username:
        return (f"{ref.registry} refused the credentials of user {credential.username!r} for {ref.name} "
                "(wrong username or password?)")
    return (f"{ref.registry} refused anonymous access to {ref.name}: add credentials with "
            f"`basetrigger task credential add --login-server {ref.registry}`")


def _describe(exc: requests.RequestException) -> str:
    """A failure's kind without its text (which may quote a URL's query, and is long)."""
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS handshake failed"
    if isinstance(exc, requests.exceptions.Timeout):
        return "timed out"
    if isinstance(exc, requests.exceptions.ConnectionError):
        return "connection failed"
    return exc.__class__.__name__
