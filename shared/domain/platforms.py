"""Platforms (`os/architecture[/variant]`), and which manifest of an image index a platform builds on.

A task's `--platform` is what it builds for (ACR's default is `linux`, that is linux/amd64). When a
base is a manifest list or an OCI index, the task builds on the one manifest its platform selects,
so that manifest's digest, not the index's, is what "the digest the task last built on" means: a
push that changes only the arm64 image of a multi-platform base does not rebuild an amd64 task.

Names are normalized as containerd normalizes them (`x86_64` is amd64, `aarch64` is arm64, arm64's
default variant is v8 and arm's is v7), so `linux/arm64/v8` and `linux/arm64` are the same key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_OS = "linux"
# What buildah picks on this machine and what ACR builds when only the OS is named.
DEFAULT_ARCHITECTURE = "amd64"

_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armhf": "arm", "armel": "arm",
                 "i386": "386"}
# Variants a platform has when none is named (so naming it changes nothing).
_DEFAULT_VARIANT = {"arm64": "v8", "arm": "v7", "amd64": "v1"}

INDEX_MEDIA_TYPES = frozenset({
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
})


class InvalidPlatform(ValueError):
    pass


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def parse(cls, text: str | None) -> Platform:
        """`linux`, `linux/arm64`, `linux/arm/v7`, `windows/amd64`; None or "" is linux/amd64."""
        parts = [p.strip().lower() for p in (text or DEFAULT_OS).split("/")]
        if not 1 <= len(parts) <= 3 or not all(parts) or not all(
                p.isascii() and p.replace("_", "").replace("-", "").isalnum() for p in parts):
            raise InvalidPlatform(f"invalid platform {text!r}: use os[/architecture[/variant]], "
                                  "e.g. linux/amd64")
        os_name = parts[0]
        arch = _ARCH_ALIASES.get(parts[1], parts[1]) if len(parts) > 1 else DEFAULT_ARCHITECTURE
        variant = parts[2] if len(parts) > 2 else ""
        if variant == _DEFAULT_VARIANT.get(arch):
            variant = ""
        return cls(os_name, arch, variant)

    @classmethod
    def of_descriptor(cls, platform: Mapping[str, Any]) -> Platform | None:
        """The platform of an index entry (its `platform` object), None when it names none."""
        os_name, arch = platform.get("os"), platform.get("architecture")
        if not isinstance(os_name, str) or not isinstance(arch, str) or not os_name or not arch:
            return None
        variant = platform.get("variant")
        try:
            return cls.parse("/".join([os_name, arch, variant] if isinstance(variant, str) and variant
                                      else [os_name, arch]))
        except InvalidPlatform:
            return None

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def key(text: str | None) -> str:
    """The normalized form of a platform string (the key digests per platform are stored under)."""
    return str(Platform.parse(text))


def index_platforms(index: Mapping[str, Any]) -> dict[str, str]:
    """Platform key -> manifest digest for every entry of a manifest list / OCI index that names a
    platform (attestation entries, `unknown/unknown`, are left out). The first entry of a platform
    wins, as a pull picks it."""
    found: dict[str, str] = {}
    manifests = index.get("manifests")
    if not isinstance(manifests, list):
        return found
    for entry in manifests:
        if not isinstance(entry, dict) or not isinstance(entry.get("digest"), str):
            continue
        platform = entry.get("platform")
        parsed = Platform.of_descriptor(platform) if isinstance(platform, dict) else None
        if parsed is None or parsed.os == "unknown":
            continue
        found.setdefault(str(parsed), entry["digest"])
    return found


def pick(platforms: Mapping[str, str] | Iterable[tuple[str, str]], platform: str | None) -> str | None:
    """The digest `platform` selects among an index's platforms (from `index_platforms`)."""
    table = dict(platforms)
    try:
        return table.get(key(platform))
    except InvalidPlatform:
        return None


def normalized_or_given(text: str | None) -> str:
    """The normalized platform for a builder's `--platform`; text that does not parse is passed as
    given, so the builder's own message says what is wrong with it (and the run fails, not crashes)."""
    try:
        return key(text)
    except InvalidPlatform:
        return text or DEFAULT_OS
