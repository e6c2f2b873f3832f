"""The one place basetrigger builds an Azure credential for real (non-emulator) endpoints.

In the cloud the Function App runs as a user-assigned managed identity. DefaultAzureCredential
only picks a user-assigned identity when it is told its client id, so the client id from
configuration (`AzureWebJobsStorage__clientId`, else `AZURE_CLIENT_ID`, read by shared.config) is
passed explicitly. On a developer machine without a managed identity the same call falls through to
the Azure CLI / azd / environment credentials, as DefaultAzureCredential always does.
"""

from __future__ import annotations

import threading

from azure.core.credentials import TokenCredential
from azure.identity import DefaultAzureCredential

from shared.config import Settings

_lock = threading.Lock()
_cache: dict[str | None, TokenCredential] = {}


def default_credential(client_id: str | None = None) -> TokenCredential:
    """DefaultAzureCredential pinned to the managed identity `client_id` when one is given.

    One instance per client id is kept for the life of the process: credentials are thread-safe and
    cache their tokens, so sharing them saves a token request per client built.
    """
    key = client_id or None
    with _lock:
        credential = _cache.get(key)
        if credential is None:
            if key:
                credential = DefaultAzureCredential(managed_identity_client_id=key)
            else:
                credential = DefaultAzureCredential()
            _cache[key] = credential
        return credential


def credential_for(settings: Settings) -> TokenCredential:
    """The credential for the identity the app's configuration names (see module docstring)."""
    return default_credential(settings.storage.client_id)
