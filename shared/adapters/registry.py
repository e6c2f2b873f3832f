"""Reading the registry API: which digest a tag points at now (HEAD on the manifest, nothing pulled)."""

from __future__ import annotations

import logging

import requests

from shared.domain.image_ref import ImageRef

log = logging.getLogger(__name__)

MANIFEST_ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])

# Docker Hub's API host differs from the name images carry.
_API_HOSTS = {"docker.io": "registry-1.docker.io"}
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")


class RegistryClient:
    def __init__(self, ca_file: str | None = None, timeout: float = 10.0):
        self.ca_file = ca_file
        self.timeout = timeout
        self.session = requests.Session()

    def _verify(self, host: str) -> str | bool:
        # Our own CA only for the local registry; public registries use the system store.
        if self.ca_file and host.rsplit(":", 1)[0] in _LOCAL_HOSTS:
            return self.ca_file
        return True

    def resolve_digest(self, reference: str) -> str | None:
        """The digest `reference`'s tag points at now, or None if the registry can't be asked."""
        ref = ImageRef.parse(reference)
        if ref.digest:
            return ref.digest
        host = _API_HOSTS.get(ref.registry, ref.registry)
        url = f"https://{host}/v2/{ref.repository}/manifests/{ref.tag}"
        headers = {"Accept": MANIFEST_ACCEPT}
        try:
            response = self.session.head(url, headers=headers, timeout=self.timeout,
                                         verify=self._verify(ref.registry))
            if response.status_code == 401:
                token = self._anonymous_token(response.headers.get("WWW-Authenticate", ""), ref.registry)
                if token:
                    headers["Authorization"] = f"Bearer {token}"
                    response = self.session.head(url, headers=headers, timeout=self.timeout,
                                                 verify=self._verify(ref.registry))
        except requests.RequestException as exc:
            log.warning("cannot resolve %s: %s", reference, exc.__class__.__name__)
            return None
        if response.status_code != 200:
            log.info("cannot resolve %s: registry answered %s", reference, response.status_code)
            return None
        return response.headers.get("Docker-Content-Digest")

    def _anonymous_token(self, challenge: str, registry: str) -> str | None:
        if not challenge.lower().startswith("bearer "):
            return None
        params = dict(
            part.split("=", 1) for part in challenge[7:].replace('"', "").split(",") if "=" in part
        )
        realm = params.pop("realm", None)
        if not realm:
            return None
        try:
            response = self.session.get(realm, params=params, timeout=self.timeout,
                                        verify=self._verify(registry))
            response.raise_for_status()
            body = response.json()
        except (requests.RequestException, ValueError):
            return None
        token = body.get("token") or body.get("access_token")
        return str(token) if token else None
