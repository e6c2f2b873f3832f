"""The app's own functions on real storage, for property tests that call them as the host does.

`edge` is one set of services per test module on the stack's Azurite with a table prefix and queue
of its own (tests/conftest.py unique_settings), wired into every functions/ module in place of the
process-wide `services()`. Registries other than the stack's own answer "unreachable" at once: a
fuzzed image name must never send a request to the internet (nor wait for one).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator, Sequence

import pytest

import functions
from shared.adapters.registry import RegistryClient
from shared.bootstrap import Services
from shared.domain.credentials import RegistryCredential
from shared.domain.image_ref import ImageRef, InvalidReference
from shared.domain.manifests import Failure, ManifestInfo, RegistryError
from tests.conftest import unique_settings

HARBOR_AUTH = "Basic cHJvcGVydHk6dGVzdHM="
GITHUB_SECRET = "property-tests-webhook-secret"


class LocalRegistryOnly:
    """The registry client for the stack's registry; every other registry is unreachable."""

    def __init__(self, real: RegistryClient, local: str | None):
        self.real = real
        self.local = local

    def _is_local(self, reference: str) -> bool:
        try:
            return self.local is not None and ImageRef.parse(reference).registry == self.local
        except InvalidReference:
            return False

    def resolve_digest(
        self, reference: str, platform: str | None = None, credentials: Sequence[RegistryCredential] = ()
    ) -> str | None:
        if self._is_local(reference):
            return self.real.resolve_digest(reference, platform, credentials)
        return None

    def inspect(
        self, reference: str, credentials: Sequence[RegistryCredential] = (), with_platforms: bool = False
    ) -> ManifestInfo:
        if self._is_local(reference):
            return self.real.inspect(reference, credentials, with_platforms)
        raise RegistryError(Failure.UNREACHABLE, f"{reference}: not reachable from the property tests")


class EdgeServices(Services):
    def __init__(self, **settings: str):
        super().__init__(unique_settings(**settings))
        self.registry = LocalRegistryOnly(self.registry, self.settings.registry_host)  # type: ignore[assignment]


def function_modules() -> list:
    return [importlib.import_module(f"functions.{m.name}") for m in pkgutil.iter_modules(functions.__path__)]


@pytest.fixture(scope="module")
def edge() -> Iterator[EdgeServices]:
    services = EdgeServices(
        BASETRIGGER_HARBOR_AUTH=HARBOR_AUTH, BASETRIGGER_GITHUB_WEBHOOK_SECRET=GITHUB_SECRET
    )
    with pytest.MonkeyPatch.context() as patch:
        for module in function_modules():
            if hasattr(module, "services"):
                patch.setattr(module, "services", lambda: services)
        yield services
    services.storage.drop_all()
