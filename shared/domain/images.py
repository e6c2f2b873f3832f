"""Image name templates of tasks (`helloworld:{{.Run.ID}}`), rendered the way ACR Tasks does."""

from __future__ import annotations

import re

from shared.domain.image_ref import ImageRef, InvalidReference, fits_a_key

_PLACEHOLDER = re.compile(r"\{\{\s*\.Run\.(ID|Registry|Commit|Branch)\s*\}\}")


def has_registry(name: str) -> bool:
    """Does the name start with a registry host (`localhost`, a dot, a port or an IPv6 literal)?"""
    first, sep, _ = name.partition("/")
    return bool(sep) and ("." in first or ":" in first or first == "localhost" or first.startswith("["))


def render(template: str, run_id: str, registry: str | None, commit: str | None = None,
           branch: str | None = None) -> str:
    """Fill `{{.Run.ID}}` / `{{.Run.Registry}}`, and `{{.Run.Commit}}` / `{{.Run.Branch}}` for runs
    a source trigger started (empty for others, as in ACR); names without a registry go to the
    task's registry."""
    values = {"ID": run_id, "Registry": registry or "", "Commit": commit or "", "Branch": branch or ""}
    text = _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)
    if registry and not has_registry(text):
        text = f"{registry}/{text}"
    image = str(ImageRef.parse(text))
    if not fits_a_key(image):  # a run's rows are keyed by its output images (`image|<image>|…`)
        raise InvalidReference(image, "too long for a table key once escaped")
    return image


def qualify(name: str, registry: str | None) -> str:
    """A user-typed image name as runs store it (`helloworld:da6` -> `localhost:5000/helloworld:da6`)."""
    return render(name, "", registry)
