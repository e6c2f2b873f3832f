"""What changed between two digests of a base image, and what kind of change it is.

Pure: the registry reads happen in shared.service_layer.base_changes, which hands this module the
manifests, the image configs and each layer as a byte stream.

An image is summarised as an `ImageSnapshot` (one platform): its config fields that change what a
build FROM it does (env, entrypoint, cmd, user, workdir, labels, exposed ports, platform), its
layers (digest and diff_id), its OS packages and its `/etc/os-release`. Package databases are read
out of the layer tarballs, in layer order, with whiteouts applied:

- dpkg `var/lib/dpkg/status` and apk `lib/apk/db/installed`; rpm is not read (its database is a
  Berkeley DB or SQLite file of binary headers: not practical here, and said so in the notes);
- `etc/os-release`, or `usr/lib/os-release` (what the former usually links to).

A layer is read as a stream (`tarfile` "r|*": gzip or plain; zstd layers are noted as unread), and
only the few wanted files are kept, each bounded (MAX_FILE_BYTES): a hostile layer cannot fill the
memory with a huge status file, nor with millions of entries (the member list is not kept).

The classification, most significant first:
- `os release changed`  the OS (ID or VERSION_ID of os-release) differs;
- `packages`            the content differs: packages added, removed or upgraded (listed), or
                        files outside any package database (layers with other diff_ids);
- `metadata only`       the same content (diff_ids), other config (env, labels, cmd, …);
- `identical content`   the same content and config: a re-push, re-compressed layers or new
                        timestamps (`created`, history) only.
"""

from __future__ import annotations

import posixpath
import tarfile
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import IO, Any

# A status file of a large distribution is a few MiB; far larger is not one we read.
MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_CONFIG_BYTES = 1024 * 1024

DPKG_STATUS = "var/lib/dpkg/status"
APK_INSTALLED = "lib/apk/db/installed"
RPM_DATABASES = ("var/lib/rpm/rpmdb.sqlite", "var/lib/rpm/Packages", "usr/lib/sysimage/rpm/rpmdb.sqlite")
OS_RELEASE = "etc/os-release"
USR_OS_RELEASE = "usr/lib/os-release"
WANTED = frozenset({DPKG_STATUS, APK_INSTALLED, OS_RELEASE, USR_OS_RELEASE})
# The diff_id of an empty tar (1024 zero bytes): a layer a commit with no change adds. It adds no
# content, so it never makes two images differ.
EMPTY_LAYER = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


class ChangeKind(StrEnum):
    IDENTICAL = "identical content"
    METADATA = "metadata only"
    PACKAGES = "packages"
    OS_RELEASE = "os release changed"

    @property
    def rank(self) -> int:
        return list(ChangeKind).index(self)


class LayerUnreadable(ValueError):
    """A layer that is not a tar stream we can read (zstd, garbage)."""


# ---- one layer ---------------------------------------------------------------------------------
@dataclass
class LayerFiles:
    """What one layer says about the wanted files: their contents (None: a file there too large to
    read), the paths it deletes (whiteouts) and the directories it makes opaque."""

    found: dict[str, bytes | None] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    opaque: set[str] = field(default_factory=set)
    rpm: bool = False
    notes: list[str] = field(default_factory=list)


def _normalize(name: str) -> str:
    path = posixpath.normpath("/" + name.lstrip("./").lstrip("/")).lstrip("/")
    return "" if path == "." else path


def _under(path: str, directory: str) -> bool:
    return not directory or path == directory or path.startswith(directory + "/")


def read_layer(stream: IO[bytes], max_file_bytes: int = MAX_FILE_BYTES) -> LayerFiles:
    """The wanted files of one layer tarball (plain or gzip), read as a stream."""
    files = LayerFiles()
    try:
        tar = tarfile.open(fileobj=stream, mode="r|*")
    except tarfile.TarError as exc:
        raise LayerUnreadable(f"not a tar stream (gzip and plain are read): {exc}") from None
    with tar:
        try:
            for member in tar:
                # Stream mode keeps every header read (an attribute typeshed does not declare):
                # emptied, so millions of entries cost no memory.
                tar.members = []  # type: ignore[attr-defined]
                path = _normalize(member.name)
                directory, base = posixpath.split(path)
                if base == OPAQUE:
                    files.opaque.add(directory)
                elif base.startswith(WHITEOUT):
                    files.deleted.add(posixpath.join(directory, base[len(WHITEOUT):]))
                elif path in RPM_DATABASES:
                    files.rpm = True
                elif path in WANTED:
                    if member.issym() and path == OS_RELEASE:
                        continue  # usually -> ../usr/lib/os-release, read as that path
                    if not member.isfile():
                        continue
                    if member.size > max_file_bytes:
                        files.found[path] = None
                        files.notes.append(f"/{path} is {member.size} bytes, more than the "
                                           f"{max_file_bytes} read: not read")
                        continue
                    content = tar.extractfile(member)
                    files.found[path] = content.read(max_file_bytes + 1) if content else b""
        except (tarfile.TarError, EOFError, zlib.error) as exc:
            raise LayerUnreadable(f"the layer's tar stream is broken: {exc}") from None
        # An OSError is the stream failing (a broken connection), not the layer: the caller's.
    return files


def apply_layers(layers: Iterable[LayerFiles]) -> dict[str, bytes | None]:
    """The wanted files of the image the layers make, lowest layer first: a layer's whiteouts and
    opaque directories hide what the layers below it put there, never what it adds itself."""
    tree: dict[str, bytes | None] = {}
    for layer in layers:
        for path in list(tree):
            if any(_under(path, d) for d in layer.deleted) or any(
                    _under(path, d) and path != d for d in layer.opaque):
                del tree[path]
        tree.update(layer.found)
    return tree


# ---- package databases and os-release --------------------------------------------------------
MAX_VALUE_CHARS = 200


def _printable(value: str) -> str:
    """A value read from a layer, safe to print: control characters (a terminal's escape
    sequences) dropped, and cut to MAX_VALUE_CHARS. Layers are anyone's content."""
    cleaned = "".join(ch for ch in value if ch.isprintable())
    return cleaned if len(cleaned) <= MAX_VALUE_CHARS else cleaned[:MAX_VALUE_CHARS] + "…"


def _paragraphs(text: str) -> Iterable[list[str]]:
    paragraph: list[str] = []
    for line in text.splitlines():
        if line.strip():
            paragraph.append(line)
        elif paragraph:
            yield paragraph
            paragraph = []
    if paragraph:
        yield paragraph


def parse_dpkg_status(text: str) -> dict[str, str]:
    """Package -> version of the installed packages of a dpkg status file (`Status: … installed`;
    `name:arch` for a Multi-Arch: same package, as dpkg names it)."""
    packages: dict[str, str] = {}
    for paragraph in _paragraphs(text):
        fields: dict[str, str] = {}
        for line in paragraph:
            if line[:1] in (" ", "\t"):
                continue  # a continuation line (Description, Conffiles): not needed
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip().lower()] = value.strip()
        name, version = fields.get("package"), fields.get("version")
        if not name or not version or fields.get("status", "").split()[-1:] != ["installed"]:
            continue
        if fields.get("multi-arch") == "same" and fields.get("architecture"):
            name = f"{name}:{fields['architecture']}"
        packages[_printable(name)] = _printable(version)
    return packages


def parse_apk_installed(text: str) -> dict[str, str]:
    """Package -> version of an apk `installed` database (`P:` name, `V:` version)."""
    packages: dict[str, str] = {}
    for paragraph in _paragraphs(text):
        fields = {line[:1]: line[2:].strip() for line in paragraph if line[1:2] == ":"}
        if fields.get("P") and fields.get("V"):
            packages[_printable(fields["P"])] = _printable(fields["V"])
    return packages


def parse_os_release(text: str) -> dict[str, str]:
    """KEY=value pairs of os-release(5), quotes removed."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        key, sep, value = line.partition("=")
        if not sep or line.startswith("#") or not key.isidentifier():
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        found[key] = _printable(value)
    return found


# ---- one image ---------------------------------------------------------------------------------
CONFIG_FIELDS = ("Env", "Entrypoint", "Cmd", "User", "WorkingDir", "Labels", "ExposedPorts")


@dataclass
class Layer:
    digest: str
    diff_id: str | None


@dataclass
class ImageSnapshot:
    """One platform's image, as far as a change of it matters."""

    digest: str
    platform: str
    config: dict[str, Any] = field(default_factory=dict)
    layers: list[Layer] = field(default_factory=list)
    package_manager: str | None = None  # dpkg, apk, or None (none found)
    packages: dict[str, str] = field(default_factory=dict)
    os_release: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def config_summary(config: Mapping[str, Any]) -> tuple[str, dict[str, Any], list[str]]:
    """(platform, the compared config fields, diff_ids) of an image config document."""
    platform = "/".join(str(config[k]) for k in ("os", "architecture", "variant")
                        if isinstance(config.get(k), str) and config[k])
    inner: Mapping[str, Any] = config["config"] if isinstance(config.get("config"), dict) else {}
    fields = {name: inner.get(name) for name in CONFIG_FIELDS}
    fields["Env"] = sorted(fields["Env"]) if isinstance(fields["Env"], list) else fields["Env"]
    if isinstance(fields["ExposedPorts"], dict):
        fields["ExposedPorts"] = sorted(fields["ExposedPorts"])
    rootfs: Mapping[str, Any] = config["rootfs"] if isinstance(config.get("rootfs"), dict) else {}
    diff_ids: list[Any] = rootfs["diff_ids"] if isinstance(rootfs.get("diff_ids"), list) else []
    return platform, fields, [str(d) for d in diff_ids]


def snapshot(digest: str, config: Mapping[str, Any], layer_digests: list[str],
             layers: Iterable[LayerFiles]) -> ImageSnapshot:
    """An image's snapshot from its config, its layer digests and the files read from its layers."""
    platform, fields, diff_ids = config_summary(config)
    image = ImageSnapshot(digest, platform or "unknown", fields, [
        Layer(d, diff_ids[i] if i < len(diff_ids) else None) for i, d in enumerate(layer_digests)])
    read = list(layers)
    for layer in read:
        image.notes.extend(layer.notes)
    tree = apply_layers(read)
    if any(layer.rpm for layer in read):
        image.notes.append("an rpm database is present: rpm packages are not read")
    if tree.get(DPKG_STATUS) is not None:
        image.package_manager = "dpkg"
        image.packages = parse_dpkg_status(_text(tree[DPKG_STATUS]))
    elif tree.get(APK_INSTALLED) is not None:
        image.package_manager = "apk"
        image.packages = parse_apk_installed(_text(tree[APK_INSTALLED]))
    release = tree.get(OS_RELEASE) if OS_RELEASE in tree else tree.get(USR_OS_RELEASE)
    if release is not None:
        image.os_release = parse_os_release(_text(release))
    return image


def _text(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", errors="replace")


# ---- comparing two images --------------------------------------------------------------------
@dataclass
class Upgrade:
    package: str
    old: str
    new: str


@dataclass
class PlatformChange:
    platform: str
    kind: ChangeKind
    old_digest: str | None
    new_digest: str | None
    config: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # field -> (old, new)
    layers_added: list[str] = field(default_factory=list)
    layers_removed: list[str] = field(default_factory=list)
    layers_kept: list[str] = field(default_factory=list)
    # Layers whose blobs differ but whose uncompressed content (diff_id) is the same.
    layers_recompressed: list[str] = field(default_factory=list)
    layers_empty: list[str] = field(default_factory=list)  # added empty layers (EMPTY_LAYER)
    packages_added: dict[str, str] = field(default_factory=dict)
    packages_removed: dict[str, str] = field(default_factory=dict)
    packages_upgraded: list[Upgrade] = field(default_factory=list)
    os_release: tuple[str | None, str | None] = (None, None)  # PRETTY_NAME (or ID VERSION_ID)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"platform": self.platform, "classification": str(self.kind),
                "from": self.old_digest, "to": self.new_digest,
                "config": {k: {"from": a, "to": b} for k, (a, b) in self.config.items()},
                "layers": {"added": self.layers_added, "removed": self.layers_removed,
                           "kept": self.layers_kept, "recompressed": self.layers_recompressed,
                           "empty": self.layers_empty},
                "packages": {"added": self.packages_added, "removed": self.packages_removed,
                             "upgraded": [{"package": u.package, "from": u.old, "to": u.new}
                                          for u in self.packages_upgraded]},
                "os_release": {"from": self.os_release[0], "to": self.os_release[1]},
                "notes": self.notes}


def _os_name(release: Mapping[str, str]) -> str | None:
    if not release:
        return None
    return release.get("PRETTY_NAME") or " ".join(
        v for v in (release.get("ID"), release.get("VERSION_ID")) if v) or None


def _os_identity(release: Mapping[str, str]) -> tuple[str | None, str | None]:
    return release.get("ID"), release.get("VERSION_ID")


EMPTY = ImageSnapshot("", "")


def _content(image: ImageSnapshot) -> list[str]:
    """The image's content, layer by layer (uncompressed digests; empty layers left out)."""
    return [layer.diff_id or layer.digest for layer in image.layers if layer.diff_id != EMPTY_LAYER]


def compare(old: ImageSnapshot | None, new: ImageSnapshot | None) -> PlatformChange:
    """What changed from `old` to `new` (one platform; None: the platform is not in that image)."""
    a, b = old or EMPTY, new or EMPTY
    change = PlatformChange(b.platform or a.platform, ChangeKind.IDENTICAL, old.digest if old else None,
                            new.digest if new else None, notes=[*a.notes, *b.notes])
    change.config = {k: (a.config.get(k), b.config.get(k)) for k in CONFIG_FIELDS
                     if a.config.get(k) != b.config.get(k)}
    if old and new and a.platform != b.platform:
        change.config["platform"] = (a.platform, b.platform)
    old_blobs = {layer.digest for layer in a.layers}
    new_blobs = {layer.digest for layer in b.layers}
    old_content = {layer.diff_id for layer in a.layers if layer.diff_id}
    new_content = {layer.diff_id for layer in b.layers if layer.diff_id}
    for layer in b.layers:
        if layer.digest in old_blobs:
            change.layers_kept.append(layer.digest)
        elif layer.diff_id == EMPTY_LAYER:
            change.layers_empty.append(layer.digest)
        elif layer.diff_id and layer.diff_id in old_content:
            change.layers_recompressed.append(layer.digest)
        else:
            change.layers_added.append(layer.digest)
    change.layers_removed = [layer.digest for layer in a.layers if layer.digest not in new_blobs
                             and layer.diff_id != EMPTY_LAYER
                             and not (layer.diff_id and layer.diff_id in new_content)]
    change.packages_added = {p: v for p, v in sorted(b.packages.items()) if p not in a.packages}
    change.packages_removed = {p: v for p, v in sorted(a.packages.items()) if p not in b.packages}
    change.packages_upgraded = [Upgrade(p, a.packages[p], v) for p, v in sorted(b.packages.items())
                                if p in a.packages and a.packages[p] != v]
    change.os_release = (_os_name(a.os_release), _os_name(b.os_release))

    same_content = _content(a) == _content(b)
    if _os_identity(a.os_release) != _os_identity(b.os_release) and not same_content:
        change.kind = ChangeKind.OS_RELEASE
    elif not same_content:
        change.kind = ChangeKind.PACKAGES
    elif change.config:
        change.kind = ChangeKind.METADATA
    return change


@dataclass
class BaseChange:
    """The change of a base from one digest to another, per platform."""

    image: str
    old_digest: str
    new_digest: str
    platforms: list[PlatformChange]

    @property
    def kind(self) -> ChangeKind:
        """The most significant of the platforms' classifications."""
        if not self.platforms:
            return ChangeKind.IDENTICAL
        return max((p.kind for p in self.platforms), key=lambda k: k.rank)

    def summary(self) -> str:
        """One line: the classification and what it rests on (for a wave, a decision, a log), e.g.
        `packages (linux/amd64: upgraded bash 5.2.15-2 -> 5.2.21-1; added curl 8.5.0-2)`."""
        if len(self.platforms) == 1:  # the classification is the platform's: not said twice
            only = self.platforms[0]
            details = ", ".join(_details(only))
            return f"{self.kind} ({only.platform}" + (f": {details}" if details else "") + ")"
        parts = []
        for p in self.platforms:
            details = ", ".join(_details(p))
            parts.append(f"{p.platform}: {p.kind}" + (f" ({details})" if details else ""))
        return f"{self.kind}" + (f" ({'; '.join(parts)})" if parts else "")

    def to_dict(self) -> dict[str, Any]:
        return {"image": self.image, "from": self.old_digest, "to": self.new_digest,
                "classification": str(self.kind), "summary": self.summary(),
                "platforms": [p.to_dict() for p in self.platforms]}


def _listed(items: list[str], most: int = 5) -> str:
    return ", ".join(items[:most]) + (f" and {len(items) - most} more" if len(items) > most else "")


def _details(p: PlatformChange) -> list[str]:
    """What a platform's classification rests on, shortest first."""
    detail = []
    if p.kind == ChangeKind.OS_RELEASE:
        detail.append(f"os {p.os_release[0] or 'unknown'} -> {p.os_release[1] or 'unknown'}")
    if p.packages_upgraded:
        detail.append("upgraded " + _listed([f"{u.package} {u.old} -> {u.new}" for u in p.packages_upgraded]))
    if p.packages_added:
        detail.append("added " + _listed([f"{n} {v}" for n, v in p.packages_added.items()]))
    if p.packages_removed:
        detail.append("removed " + _listed([f"{n} {v}" for n, v in p.packages_removed.items()]))
    if p.kind == ChangeKind.PACKAGES and not (p.packages_upgraded or p.packages_added or p.packages_removed):
        detail.append("files changed outside the package database")
    if p.kind == ChangeKind.METADATA:
        detail.append("config " + ", ".join(sorted(p.config)))
    return detail


def compare_platforms(image: str, old_digest: str, new_digest: str,
                      old: Mapping[str, ImageSnapshot], new: Mapping[str, ImageSnapshot]) -> BaseChange:
    """Per platform (the union of both sides' platforms, in order)."""
    changes = []
    for name in sorted(set(old) | set(new)):
        change = compare(old.get(name), new.get(name))
        change.platform = name
        changes.append(change)
    return BaseChange(image, old_digest, new_digest, changes)
