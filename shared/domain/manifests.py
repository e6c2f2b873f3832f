"""What reading a registry tells: the manifest a tag points at, or why it could not be read."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from shared.domain import platforms


class Failure(StrEnum):
    UNAUTHORIZED = "unauthorized"  # no credentials, or the registry refused them
    NOT_FOUND = "not-found"  # no such repository or tag
    RATE_LIMITED = "rate-limited"  # 429 (or 503 with Retry-After): the registry asks us to wait
    UNREACHABLE = "unreachable"  # connection refused, DNS, TLS, timeout
    ERROR = "error"  # any other answer


class RegistryError(Exception):
    """A registry read that failed; str() is one line to show (never a credential or token)."""

    def __init__(self, failure: Failure, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.failure = failure
        self.retry_after = retry_after

    @property
    def registry_wide(self) -> bool:
        """Does this say something about the whole registry (stop asking it for this cycle, and back
        off), not just one image? Only a registry that asks us to wait or cannot be reached: any other
        answer (an error for one manifest) says nothing about the registry's other images."""
        return self.failure in REGISTRY_WIDE


# The failures that RegistryError.registry_wide says are the registry's, not one image's.
REGISTRY_WIDE = frozenset({Failure.RATE_LIMITED, Failure.UNREACHABLE})


@dataclass(frozen=True)
class ManifestInfo:
    """The manifest a reference points at: its digest, its media type and, for a manifest list or
    OCI index that was read, the digest of each platform's manifest."""

    digest: str
    media_type: str | None = None
    platforms: dict[str, str] = field(default_factory=dict)

    @property
    def is_index(self) -> bool:
        return self.media_type in platforms.INDEX_MEDIA_TYPES

    def digest_for(self, platform: str | None) -> str:
        """The digest a build for `platform` uses: the platform's manifest in an index, else the
        manifest itself (and the index's own digest when the index lacks the platform)."""
        if self.platforms:
            return platforms.pick(self.platforms, platform) or self.digest
        return self.digest


@dataclass(frozen=True)
class RawManifest:
    """A manifest as the registry stored it: its bytes (what its digest is of), digest and media type."""

    digest: str
    media_type: str | None
    body: bytes

    def document(self) -> dict[str, Any]:
        try:
            found = json.loads(self.body)
        except ValueError:
            raise RegistryError(Failure.ERROR, f"the manifest {self.digest} is not JSON") from None
        if not isinstance(found, dict):
            raise RegistryError(Failure.ERROR, f"the manifest {self.digest} is not a JSON object")
        return found

    @property
    def is_index(self) -> bool:
        return (self.media_type or self.document().get("mediaType")) in platforms.INDEX_MEDIA_TYPES
