"""The pure part of `base changes`: package databases, os-release, layers with whiteouts, bounds,
and the classification (shared.domain.base_changes)."""

from __future__ import annotations

import gzip
import io
import tarfile
import tracemalloc

import pytest

from shared.domain.base_changes import (
    APK_INSTALLED,
    DPKG_STATUS,
    EMPTY_LAYER,
    ChangeKind,
    LayerUnreadable,
    apply_layers,
    compare,
    compare_platforms,
    parse_apk_installed,
    parse_dpkg_status,
    parse_os_release,
    read_layer,
    snapshot,
)

DPKG = """\
Package: libc6
Status: install ok installed
Priority: optional
Architecture: amd64
Multi-Arch: same
Version: 2.36-9+deb12u4
Description: GNU C Library
 a continuation line: Version: 9.9

Package: removed-one
Status: deinstall ok config-files
Version: 1.0

Package: bash
Status: install ok installed
Architecture: amd64
Version: 5.2.15-2+b2
"""

APK = """\
C:Q1abc=
P:musl
V:1.2.4-r2
A:x86_64

P:busybox
V:1.36.1-r5
A:x86_64
"""


def layer(files: dict[str, bytes | None], gz: bool = True,
          symlinks: dict[str, str] | None = None) -> io.BytesIO:
    """A layer tarball: files (None: a whiteout entry, named as given) and symlinks."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content or b"")
            tar.addfile(info, io.BytesIO(content or b""))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    data = gzip.compress(raw.getvalue()) if gz else raw.getvalue()
    return io.BytesIO(data)


def test_dpkg_status_lists_installed_packages_only_with_multiarch_names():
    assert parse_dpkg_status(DPKG) == {"libc6:amd64": "2.36-9+deb12u4", "bash": "5.2.15-2+b2"}


def test_apk_installed_lists_name_and_version():
    assert parse_apk_installed(APK) == {"musl": "1.2.4-r2", "busybox": "1.36.1-r5"}


def test_os_release_unquotes_and_skips_comments():
    text = '# comment\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID=\'12\'\nbad line\n'
    assert parse_os_release(text) == {"PRETTY_NAME": "Debian GNU/Linux 12 (bookworm)", "ID": "debian",
                                      "VERSION_ID": "12"}


def test_layers_apply_in_order_whiteouts_hide_lower_files():
    lower = read_layer(layer({"./var/lib/dpkg/status": DPKG.encode(), "etc/os-release": b"ID=debian\n"}))
    upper = read_layer(layer({"etc/.wh.os-release": None}, gz=False))
    assert set(apply_layers([lower])) == {DPKG_STATUS, "etc/os-release"}
    assert set(apply_layers([lower, upper])) == {DPKG_STATUS}


def test_opaque_directory_hides_lower_content_but_not_its_own_layer():
    lower = read_layer(layer({"lib/apk/db/installed": APK.encode()}))
    upper = read_layer(layer({"lib/apk/db/.wh..wh..opq": None, "lib/apk/db/installed": b"P:x\nV:1\n"}))
    tree = apply_layers([lower, upper])
    assert parse_apk_installed((tree[APK_INSTALLED] or b"").decode()) == {"x": "1"}
    only_opaque = read_layer(layer({"lib/apk/.wh..wh..opq": None}))
    assert apply_layers([lower, only_opaque]) == {}


def test_oversized_package_database_is_refused_not_read():
    big = read_layer(layer({DPKG_STATUS: b"x" * 2048}), max_file_bytes=1024)
    assert big.found == {DPKG_STATUS: None}
    assert "not read" in big.notes[0]
    image = snapshot("sha256:a", {"os": "linux", "architecture": "amd64"}, ["sha256:l"], [big])
    assert image.package_manager is None and image.packages == {}


def test_symlinked_os_release_is_read_from_usr_lib():
    files = read_layer(layer({"usr/lib/os-release": b'ID=alpine\nVERSION_ID=3.19.1\n'},
                             symlinks={"etc/os-release": "../usr/lib/os-release"}))
    image = snapshot("sha256:a", {}, ["sha256:l"], [files])
    assert image.os_release["VERSION_ID"] == "3.19.1"


def test_not_a_tar_stream_is_unreadable():
    with pytest.raises(LayerUnreadable):
        read_layer(io.BytesIO(b"\x28\xb5\x2f\xfd" + b"zstd frames are not read" * 40))


class ManyEntries(io.RawIOBase):
    """A tar stream of `count` empty files, made as it is read (never whole in memory)."""

    def __init__(self, count: int):
        self.left, self.count, self.buffer = count, count, b""

    def readable(self) -> bool:
        return True

    def readinto(self, target) -> int:
        while len(self.buffer) < len(target) and self.left >= 0:
            if self.left == 0:
                self.buffer += b"\0" * 1024  # the end of the archive
            else:
                self.buffer += tarfile.TarInfo(f"usr/share/f{self.count - self.left}").tobuf()
            self.left -= 1
        size = min(len(target), len(self.buffer))
        target[:size], self.buffer = self.buffer[:size], self.buffer[size:]
        return size


def test_a_layer_of_very_many_entries_is_read_in_bounded_memory():
    tracemalloc.start()
    try:
        files = read_layer(io.BufferedReader(ManyEntries(5_000)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert files.found == {}
    # Every header kept (what stream mode does by itself) is about 2 MiB here, 0.4 KiB an entry:
    # a layer of millions of entries would fill the memory. Read as it goes, it is some KiB.
    assert peak < 1024 * 1024, peak


def _image(digest: str, diff_ids: list[str], env: list[str], packages: str, release: str = "ID=debian\n"
           "VERSION_ID=12\n", blobs: list[str] | None = None):
    config = {"os": "linux", "architecture": "amd64", "created": digest,
              "config": {"Env": env}, "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    files = read_layer(layer({DPKG_STATUS: packages.encode(), "etc/os-release": release.encode()}))
    return snapshot(digest, config, blobs or [d.replace("diff", "blob") for d in diff_ids], [files])


def test_classification_identical_metadata_packages_os_release():
    base = _image("sha256:1", ["diff:a"], ["A=1"], DPKG)
    rewrapped = _image("sha256:2", ["diff:a"], ["A=1"], DPKG, blobs=["blob:other-compression"])
    change = compare(base, rewrapped)
    assert change.kind == ChangeKind.IDENTICAL
    assert change.layers_recompressed == ["blob:other-compression"] and change.layers_removed == []

    committed_again = compare(base, _image("sha256:2b", ["diff:a", EMPTY_LAYER], ["A=1"], DPKG,
                                           blobs=["blob:a", "blob:empty"]))
    assert committed_again.kind == ChangeKind.IDENTICAL and committed_again.layers_empty == ["blob:empty"]

    env = compare(base, _image("sha256:3", ["diff:a"], ["A=2"], DPKG))
    assert env.kind == ChangeKind.METADATA and env.config == {"Env": (["A=1"], ["A=2"])}

    bumped = compare(base, _image("sha256:4", ["diff:b"], ["A=1"], DPKG.replace("5.2.15-2+b2", "5.2.21-1")
                                  + "\nPackage: curl\nStatus: install ok installed\nVersion: 8.5\n"))
    assert bumped.kind == ChangeKind.PACKAGES
    assert [(u.package, u.old, u.new) for u in bumped.packages_upgraded] == [
        ("bash", "5.2.15-2+b2", "5.2.21-1")]
    assert bumped.packages_added == {"curl": "8.5"} and bumped.layers_removed == ["blob:a"]

    os_change = compare(base, _image("sha256:5", ["diff:c"], ["A=1"], DPKG,
                                     release="ID=debian\nVERSION_ID=13\n"))
    assert os_change.kind == ChangeKind.OS_RELEASE


def test_multi_platform_change_is_the_most_significant_platform():
    old = {"linux/amd64": _image("sha256:1", ["diff:a"], [], DPKG),
           "linux/arm64": _image("sha256:2", ["diff:x"], [], DPKG)}
    new = {"linux/amd64": _image("sha256:1", ["diff:a"], [], DPKG),
           "linux/arm64": _image("sha256:3", ["diff:y"], [], DPKG)}
    change = compare_platforms("img", "sha256:i1", "sha256:i2", old, new)
    assert [(p.platform, p.kind) for p in change.platforms] == [
        ("linux/amd64", ChangeKind.IDENTICAL), ("linux/arm64", ChangeKind.PACKAGES)]
    assert change.kind == ChangeKind.PACKAGES
    assert change.summary().startswith("packages")


def test_values_from_a_layer_are_printable_and_bounded():
    hostile = ("Package: evil\x1b]0;pwned\x07\nStatus: install ok installed\n"
               "Version: 1\x1b[2J" + "9" * 500 + "\n")
    ((name, version),) = parse_dpkg_status(hostile).items()
    assert name == "evil]0;pwned" and version.startswith("1[2J9") and len(version) == 201
    assert parse_os_release('PRETTY_NAME="Debian\x1b[31m 12"\n') == {"PRETTY_NAME": "Debian[31m 12"}
    assert parse_apk_installed("P:a\x07b\nV:1\n") == {"ab": "1"}
