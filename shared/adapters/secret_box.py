"""Encryption of secrets at rest (secret build args, git access tokens).

Secrets are stored only as Fernet tokens in the task record, never in run records, logs or API
answers. The key is the BASETRIGGER_SECRET_KEY app setting (a Key Vault reference in the cloud).
"""

from __future__ import annotations

import json

from cryptography.fernet import Fernet, InvalidToken


class SecretsUnavailable(RuntimeError):
    """Secrets were given or are needed, but no key is configured."""


class SecretBox:
    def __init__(self, key: str | None):
        self._fernet = Fernet(key.encode()) if key else None

    def _require(self) -> Fernet:
        if self._fernet is None:
            raise SecretsUnavailable(
                "secret values need BASETRIGGER_SECRET_KEY (generate one with "
                "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`)"
            )
        return self._fernet

    def seal(self, values: dict[str, str]) -> str:
        if not values:
            return ""
        return self._require().encrypt(json.dumps(values).encode()).decode()

    def open(self, sealed: str | None) -> dict[str, str]:
        if not sealed:
            return {}
        try:
            opened: dict[str, str] = json.loads(self._require().decrypt(sealed.encode()))
        except InvalidToken as exc:
            raise SecretsUnavailable("stored secrets cannot be decrypted with the configured key") from exc
        return opened
