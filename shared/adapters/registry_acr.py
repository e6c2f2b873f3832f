"""Azure Container Registry with the app's managed identity, through `azure-containerregistry`.

`ContainerRegistryClient` does the sign-in: on the registry's challenge it asks the credential for
an Entra ID token for the audience (`BASETRIGGER_ACR_AUDIENCE`, default
`https://containerregistry.azure.net`; sovereign clouds differ), trades it at
`/oauth2/exchange` for an ACR refresh token and that at `/oauth2/token` for an access token scoped
to the repository. The identity needs AcrPull on the registry (infra/app/registry-access.bicep) and
nothing more: basetrigger only reads manifests here.

One client per login server, kept for the life of the process: it caches its tokens.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

from azure.containerregistry import ContainerRegistryClient
from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)

from shared.adapters.registry_distribution import parse_retry_after
from shared.domain.events import MalformedEvent, check_digest
from shared.domain.image_ref import ImageRef
from shared.domain.manifests import Failure, ManifestInfo, RegistryError
from shared.domain.platforms import INDEX_MEDIA_TYPES, index_platforms

DEFAULT_AUDIENCE = "https://containerregistry.azure.net"


class AcrClient:
    def __init__(self, credential: TokenCredential, audience: str = DEFAULT_AUDIENCE,
                 **client_options: Any):
        self.credential = credential
        self.audience = audience
        # transport=… (tests), retry settings…: passed to every ContainerRegistryClient as they are.
        self.client_options = client_options
        self._clients: dict[str, ContainerRegistryClient] = {}
        self._lock = threading.Lock()

    def client(self, login_server: str) -> ContainerRegistryClient:
        with self._lock:
            client = self._clients.get(login_server)
            if client is None:
                client = ContainerRegistryClient(f"https://{login_server}", self.credential,
                                                 audience=self.audience, **self.client_options)
                self._clients[login_server] = client
            return client

    def inspect(self, reference: str, with_platforms: bool = False) -> ManifestInfo:
        """The manifest `reference` points at. One GET of the manifest answers both its digest and,
        for an index, its platforms (the SDK checks the body against the digest)."""
        ref = ImageRef.parse(reference)
        result = self._call(ref, lambda c: c.get_manifest(ref.repository, ref.digest or ref.tag or "latest"))
        media_type = (result.media_type or "").split(";")[0].strip() or None
        manifest = result.manifest if isinstance(result.manifest, dict) else {}
        media_type = media_type or manifest.get("mediaType")
        try:
            digest = check_digest(result.digest)
        except MalformedEvent:
            raise RegistryError(Failure.ERROR, f"{reference}: the registry answered a malformed digest") \
                from None
        found = index_platforms(manifest) if with_platforms and media_type in INDEX_MEDIA_TYPES else {}
        return ManifestInfo(digest, media_type, found)

    def manifest(self, reference: str) -> tuple[str, dict[str, Any]]:
        """The manifest document `reference` points at, and its digest (the SDK checks the body)."""
        ref = ImageRef.parse(reference)
        result = self._call(ref, lambda c: c.get_manifest(ref.repository, ref.digest or ref.tag or "latest"))
        manifest = result.manifest if isinstance(result.manifest, dict) else {}
        return check_digest(result.digest), manifest

    def blob(self, reference: str, digest: str) -> Iterator[bytes]:
        """One blob of the repository of `reference`, as chunks (checked against its digest)."""
        ref = ImageRef.parse(reference)
        return self._call(ref, lambda c: c.download_blob(ref.repository, check_digest(digest)))  # type: ignore[no-any-return]

    def _call(self, ref: ImageRef, call: Callable[[ContainerRegistryClient], Any]) -> Any:
        try:
            return call(self.client(ref.registry))
        except ResourceNotFoundError:
            raise RegistryError(Failure.NOT_FOUND, f"{ref} does not exist (404)") from None
        except ClientAuthenticationError as exc:
            raise RegistryError(Failure.UNAUTHORIZED,
                                f"{ref.registry} refused the app's managed identity for {ref.name} "
                                f"({exc.status_code or 'no token'}): does it have AcrPull?") from None
        except (ServiceRequestError, ServiceResponseError):
            raise RegistryError(Failure.UNREACHABLE, f"cannot reach {ref.registry}") from None
        except HttpResponseError as exc:
            raise _http_error(exc, ref) from None
        except MalformedEvent:
            raise RegistryError(Failure.ERROR, f"{ref}: a malformed digest") from None


def _http_error(exc: HttpResponseError, ref: ImageRef) -> RegistryError:
    status = exc.status_code
    headers = getattr(exc.response, "headers", None) or {}
    retry_after = parse_retry_after(headers.get("Retry-After"))
    if status == 429 or (status == 503 and retry_after is not None):
        return RegistryError(Failure.RATE_LIMITED, f"{ref.registry} asks to slow down ({status})",
                             retry_after=retry_after)
    if status in (401, 403):
        return RegistryError(Failure.UNAUTHORIZED,
                             f"{ref.registry} refused the app's managed identity for {ref.name} "
                             f"({status}): does it have AcrPull?")
    return RegistryError(Failure.ERROR, f"{ref.registry} answered {status} for {ref}")
