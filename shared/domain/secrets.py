"""Keeping secret values out of what basetrigger writes (logs, answers)."""

from __future__ import annotations


def redact(text: str, secrets: list[str]) -> str:
    """Replace every secret value in text; longest first so overlapping values are fully hidden."""
    for value in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(value, "***")
    return text
