"""App settings the way Core Tools provides them.

Core Tools copies `local.settings.json` `Values` into the environment of the host and the worker,
without overriding variables that are already set, and the host resolves `%NAME%` expressions in
binding properties (queue names, schedules) from those settings. devhost does the same, so the app
and its bindings see the same values as under `func start`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path

LOCAL_SETTINGS_FILE = "local.settings.json"

_EXPRESSION = re.compile(r"%([^%]+)%")


class SettingsError(ValueError):
    """A settings file or a binding expression cannot be used."""


@dataclass(frozen=True)
class LocalSettings:
    path: Path | None = None
    applied: tuple[str, ...] = ()
    local_http_port: int | None = None


def load_local_settings(root: Path, environ: MutableMapping[str, str] = os.environ) -> LocalSettings:
    """Copy `Values` of `<root>/local.settings.json` into `environ`; variables already set win."""
    path = root / LOCAL_SETTINGS_FILE
    if not path.is_file():
        return LocalSettings()
    try:
        # utf-8-sig: files saved by Visual Studio tooling start with a byte-order mark.
        document = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SettingsError(f"{path}: cannot read it as JSON ({exc})") from exc
    if not isinstance(document, dict):
        raise SettingsError(f"{path}: expected a JSON object")
    if document.get("IsEncrypted"):
        raise SettingsError(
            f"{path} has IsEncrypted: true; devhost cannot decrypt it "
            "(run `func settings decrypt` where Core Tools exist, or write plain values)"
        )
    values = document.get("Values") or {}
    if not isinstance(values, dict):
        raise SettingsError(f"{path}: 'Values' must be an object")

    applied = []
    for name, value in values.items():
        if name in environ or value is None:
            continue
        # Settings are strings in Azure; a JSON true/1 becomes "true"/"1" as the host would see it.
        environ[name] = value if isinstance(value, str) else json.dumps(value)
        applied.append(name)

    port = (document.get("Host") or {}).get("LocalHttpPort")
    return LocalSettings(path=path, applied=tuple(applied), local_http_port=int(port) if port else None)


def resolve(expression: str, environ: Mapping[str, str] = os.environ) -> str:
    """Replace every `%NAME%` in a binding property with the app setting NAME."""

    def setting(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            raise SettingsError(f"'%{name}%' does not resolve to a value: app setting {name} is not set")
        return environ[name]

    return _EXPRESSION.sub(setting, expression)
