"""Encryption of secrets at rest (secret build args, git access tokens).

Secrets are stored only as Fernet tokens in the task record, never in run records, logs or API
answers. The keys are the BASETRIGGER_SECRET_KEY app setting (a Key Vault reference in the cloud):
one Fernet key, or several separated by commas or whitespace for a rotation. The first key
encrypts; every key decrypts (`MultiFernet`), so a new key can be put first while secrets sealed
with the old one stay readable until `reseal` has re-encrypted them (`basetrigger admin
rotate-secrets`), after which the old key can be dropped.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import re

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class SecretsUnavailable(RuntimeError):
    """Secrets were given or are needed, but no key is configured (or none of them fits)."""


def parse_keys(setting: str | None) -> list[str]:
    """The keys of a BASETRIGGER_SECRET_KEY value, newest (encrypting) first."""
    return [key for key in re.split(r"[\s,]+", setting or "") if key]


def fingerprint(key: str) -> str:
    """A short name for a key that reveals nothing of it (to say which key encrypts)."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


class SecretBox:
    def __init__(self, keys: str | None):
        self.keys = parse_keys(keys)
        try:
            fernets = [Fernet(key.encode()) for key in self.keys]
        except (ValueError, binascii.Error) as exc:
            # The message must not carry the setting's value: it is the secret.
            raise SecretsUnavailable(
                "BASETRIGGER_SECRET_KEY must hold Fernet keys (URL-safe base64 of 32 bytes, 44 characters), "
                "separated by commas or spaces"
            ) from exc
        self._primary = fernets[0] if fernets else None
        self._fernet = MultiFernet(fernets) if fernets else None

    @property
    def primary_fingerprint(self) -> str | None:
        return fingerprint(self.keys[0]) if self.keys else None

    def _require(self) -> MultiFernet:
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

    def is_current(self, sealed: str) -> bool:
        """Whether `sealed` is already encrypted with the first (encrypting) key."""
        self._require()
        assert self._primary is not None
        try:
            self._primary.decrypt(sealed.encode())
        except InvalidToken:
            return False
        return True

    def reseal(self, sealed: str) -> str:
        """`sealed` re-encrypted with the first key; SecretsUnavailable when no key opens it."""
        try:
            return self._require().rotate(sealed.encode()).decode()
        except InvalidToken as exc:
            raise SecretsUnavailable("stored secrets cannot be decrypted with any configured key") from exc
