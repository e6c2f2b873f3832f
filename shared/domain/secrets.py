"""Keeping secret values out of what basetrigger writes (logs, answers).

A secret is hidden wherever a build may print it: whole; line by line when it spans lines (a PEM
key echoed by a `RUN` reaches the log one line at a time); and in base64, as `base64` prints it
(wrapped at 76 characters, with or without the newline `echo` adds).
"""

from __future__ import annotations

import base64
import re

MASK = "***"
# Lines of a multi-line secret shorter than this are left alone: hiding every `-----` or `}` of
# every log would hide the log, and so few characters give nothing away.
MIN_LINE = 4
_BASE64_LINE = 76


def _forms(secret: str) -> set[str]:
    forms = {secret}
    lines = [line.strip() for line in secret.splitlines()]
    forms.update(line for line in lines if len(line) >= MIN_LINE)
    for raw in (secret.encode(), (secret + "\n").encode()):
        for encoded in (base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()):
            forms.add(encoded)
            forms.add(encoded.rstrip("="))
            chunks = [encoded[i : i + _BASE64_LINE] for i in range(0, len(encoded), _BASE64_LINE)]
            forms.update(chunk for chunk in chunks if len(chunk) >= MIN_LINE)
    return {form for form in forms if form}


class SecretMask:
    """Replaces every form of every secret by `***`, longest first so overlaps are fully hidden."""

    def __init__(self, secrets: list[str]):
        forms: set[str] = set()
        for secret in secrets:
            if secret:
                forms |= _forms(secret)
        ordered = sorted(forms, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __call__(self, text: str) -> str:
        return self._pattern.sub(MASK, text) if self._pattern else text


def redact(text: str, secrets: list[str]) -> str:
    return SecretMask(secrets)(text)

