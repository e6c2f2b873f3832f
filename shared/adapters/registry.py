"""The one way basetrigger reads registries: which manifest a base points at (the `Registry` port).

Every digest basetrigger records or compares comes from here: a task's bases when it is created,
the bases a build used, staleness reports, and the poller. Per registry:

- an ACR login server (`*.azurecr.io` and the sovereign clouds' suffixes) is read with the app's
  managed identity through `azure-containerregistry` (shared.adapters.registry_acr), unless the task
  names a username and password for it;
- any other registry through the distribution API (shared.adapters.registry_distribution): the
  token flow, anonymous or with the task's basic credentials, Docker Hub's API host included.

A task building one platform FROM a manifest list or OCI index records that platform's manifest
digest (shared.domain.platforms), so a push that changes another platform's image rebuilds nothing.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any

from shared.adapters.registry_acr import AcrClient
from shared.adapters.registry_distribution import DistributionClient
from shared.domain.credentials import RegistryCredential, for_registry, is_acr
from shared.domain.image_ref import ImageRef, InvalidReference
from shared.domain.manifests import Failure, ManifestInfo, RawManifest, RegistryError
from shared.domain.platforms import index_platforms, pick

log = logging.getLogger(__name__)

# resolve_digest serves interactive paths (task create, a build): it waits out a short Retry-After
# once, and gives up on longer ones rather than hold a request.
MAX_INTERACTIVE_WAIT_SECONDS = 5.0


class RegistryClient:
    def __init__(self, ca_file: str | None = None, timeout: float = 10.0,
                 acr: Callable[[], AcrClient] | None = None, distribution: DistributionClient | None = None,
                 pool_size: int = 64):
        self.distribution = distribution or DistributionClient(ca_file=ca_file, timeout=timeout,
                                                               pool_size=pool_size)
        # Built on first use: the managed identity is needed only where an ACR base is read.
        self._acr_factory = acr
        self._acr: AcrClient | None = None

    def _acr_client(self) -> AcrClient:
        if self._acr is None:
            if self._acr_factory is None:
                raise RegistryError(Failure.UNAUTHORIZED, "no managed identity is configured for ACR")
            self._acr = self._acr_factory()
        return self._acr

    def inspect(self, reference: str, credentials: Sequence[RegistryCredential] = (),
                with_platforms: bool = False) -> ManifestInfo:
        """The manifest `reference` points at; RegistryError says why when it cannot be read."""
        try:
            ref = ImageRef.parse(reference)
        except InvalidReference as exc:
            raise RegistryError(Failure.ERROR, str(exc)) from None
        credential = for_registry(credentials, ref.registry)
        if is_acr(ref.registry) and (credential is None or credential.use_identity):
            return self._acr_client().inspect(str(ref), with_platforms=with_platforms)
        if credential is not None and credential.use_identity:
            credential = None  # only ACR accepts the identity; RegistryCredential refuses it elsewhere
        return self.distribution.inspect(str(ref), credential, with_platforms=with_platforms)

    def _route(self, reference: str, credentials: Sequence[RegistryCredential]) \
            -> tuple[ImageRef, RegistryCredential | None, bool]:
        """(reference, the credential to send, whether ACR's identity reads it)."""
        try:
            ref = ImageRef.parse(reference)
        except InvalidReference as exc:
            raise RegistryError(Failure.ERROR, str(exc)) from None
        credential = for_registry(credentials, ref.registry)
        if is_acr(ref.registry) and (credential is None or credential.use_identity):
            return ref, None, True
        return ref, None if credential is not None and credential.use_identity else credential, False

    def manifest(self, reference: str, credentials: Sequence[RegistryCredential] = ()) \
            -> tuple[str, dict[str, Any]]:
        """The manifest document `reference` (a tag or a digest) points at, and its digest."""
        ref, credential, acr = self._route(reference, credentials)
        if acr:
            return self._acr_client().manifest(str(ref))
        raw = self.distribution.manifest(str(ref), credential)
        return raw.digest, raw.document()

    @contextlib.contextmanager
    def blob(self, reference: str, digest: str,
             credentials: Sequence[RegistryCredential] = ()) -> Iterator[IO[bytes]]:
        """One blob of the repository of `reference`, as a stream of its stored bytes."""
        ref, credential, acr = self._route(reference, credentials)
        if acr:
            chunks = self._acr_client().blob(str(ref), digest)
            try:
                yield io.BufferedReader(_ChunkReader(chunks))
            finally:
                close = getattr(chunks, "close", None)
                if close:
                    close()
            return
        response = self.distribution.stream_blob(str(ref), digest, credential)
        try:
            yield response.raw
        finally:
            response.close()

    def images(self, reference: str, credentials: Sequence[RegistryCredential] = ()) -> ImageStore:
        """Manifests and blobs of `reference`'s registry, read and written as the task signs in there
        (the rebase builder). ACR read with the app's identity is not written to: the identity has
        AcrPull only, and azure-containerregistry cannot mount blobs across repositories."""
        ref, credential, acr = self._route(reference, credentials)
        if acr:
            raise RegistryError(Failure.UNAUTHORIZED, f"{ref.registry}: rebasing with the app's managed "
                                "identity is not supported (AcrPull only); add the registry's "
                                "credentials to the task, or keep --update-policy rebuild")
        return ImageStore(self.distribution, credential)

    def base_layers(self, reference: str, platform: str | None = None,
                    credentials: Sequence[RegistryCredential] = ()) -> list[str]:
        """The layer digests of the manifest a build of `platform` FROM `reference` uses."""
        store = self.images(reference, credentials)
        manifest = store.platform_manifest(reference, platform)
        return [str(layer.get("digest")) for layer in manifest.document().get("layers") or []]

    def resolve_digest(self, reference: str, platform: str | None = None,
                       credentials: Sequence[RegistryCredential] = ()) -> str | None:
        """The digest a build of `platform` FROM `reference` uses now, or None when the registry
        cannot tell (the reason is logged)."""
        for attempt in (1, 2):
            try:
                info = self.inspect(reference, credentials, with_platforms=platform is not None)
                return info.digest_for(platform)
            except RegistryError as exc:
                wait = exc.retry_after
                if attempt == 1 and wait is not None and wait <= MAX_INTERACTIVE_WAIT_SECONDS:
                    time.sleep(wait)
                    continue
                log.info("cannot resolve %s: %s", reference, exc)
                return None
        return None


class _ChunkReader(io.RawIOBase):
    """A readable stream over an iterator of byte chunks (the ACR SDK's blob download)."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks
        self._rest = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._rest:
            try:
                self._rest = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._rest))
        buffer[:size] = self._rest[:size]
        self._rest = self._rest[size:]
        return size


class ImageStore:
    """One registry's manifests and blobs, as one credential (shared.adapters.registry_distribution)."""

    def __init__(self, client: DistributionClient, credential: RegistryCredential | None):
        self.client = client
        self.credential = credential

    def manifest(self, reference: str) -> RawManifest:
        return self.client.manifest(reference, self.credential)

    def platform_manifest(self, reference: str, platform: str | None) -> RawManifest:
        """The manifest itself, or, for an index, the entry for `platform` (RegistryError if none)."""
        found = self.manifest(reference)
        if not found.is_index:
            return found
        entry = pick(index_platforms(found.document()), platform)
        if entry is None:
            raise RegistryError(Failure.NOT_FOUND, f"{reference} has no image for {platform}")
        return self.manifest(f"{ImageRef.parse(reference).name}@{entry}")

    def blob(self, reference: str, digest: str) -> bytes:
        return self.client.blob(reference, digest, self.credential)

    def has_blob(self, reference: str, digest: str) -> bool:
        return self.client.has_blob(reference, digest, self.credential)

    def mount_blob(self, reference: str, digest: str, source_repository: str) -> bool:
        return self.client.mount_blob(reference, digest, source_repository, self.credential)

    def upload_blob(self, reference: str, data: bytes) -> str:
        return self.client.upload_blob(reference, data, self.credential)

    def put_manifest(self, reference: str, body: bytes, media_type: str) -> str:
        return self.client.put_manifest(reference, body, media_type, self.credential)
