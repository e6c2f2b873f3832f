"""Uploaded contexts at the edge: any bytes are a tar(.gz) that unpacks within the limits, or a
ContextError (ContextTooLarge for bombs); unpacking never writes outside its folder, never past its
limits, and agrees with the up-front check."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import tarfile
import tempfile
from pathlib import Path

from hypothesis import example, given
from hypothesis import strategies as st

from shared.adapters.sources import extract_archive
from shared.domain.builds import ContextError, ContextTooLarge, UnpackLimits, check_archive

NAMES = [
    "Dockerfile",
    "a/b.txt",
    "dir/",
    "../escape",
    "../../etc/x",
    "/abs/path",
    "a/../../up",
    ".",
    "./x",
    "",
    "a" * 100,
    "b/" * 60 + "deep",
    "é/ü.txt",
    "x\\y",
    "sp ace",
    "link",
    "dir/link",
    "\udcff",
    "a//b",
    "-rf",
]
LINKS = [
    "",
    "Dockerfile",
    "../outside",
    "/etc/passwd",
    "/",
    "..",
    "dir",
    "link",
    "a/b.txt",
    "nowhere",
    "../" * 5,
]
TYPES = [
    tarfile.REGTYPE,
    tarfile.REGTYPE,
    tarfile.DIRTYPE,
    tarfile.SYMTYPE,
    tarfile.LNKTYPE,
    tarfile.CHRTYPE,
    tarfile.FIFOTYPE,
    tarfile.CONTTYPE,
    b"Z",
]

member = st.fixed_dictionaries(
    {
        "name": st.sampled_from(NAMES) | st.text(max_size=20),
        "type": st.sampled_from(TYPES),
        "link": st.sampled_from(LINKS),
        "data": st.binary(max_size=64),
        # The size a header declares: the data's own, or a lie (a bomb declares gigabytes).
        "size": st.one_of(st.none(), st.sampled_from([0, 1, 511, 513, 10**6, 2**30, 2**33])),
        "mode": st.sampled_from([0o644, 0o755, 0o4755, 0o777, 0o000, 0o7777]),
    }
)


def build_tar(members: list[dict], fmt: int) -> bytes:
    """A tar written header by header, so a header may declare a size its data does not have."""
    out = io.BytesIO()
    for m in members:
        info = tarfile.TarInfo(m["name"])
        info.type = m["type"]
        info.linkname = m["link"]
        info.mode = m["mode"]
        data = m["data"] if m["type"] in (tarfile.REGTYPE, tarfile.CONTTYPE) else b""
        info.size = len(data) if m["size"] is None or not data and m["size"] else m["size"]
        try:
            header = info.tobuf(fmt, tarfile.ENCODING, "surrogateescape")
        except (ValueError, UnicodeError, tarfile.TarError):
            continue  # a name or size this format cannot hold: leave the member out
        out.write(header + data + bytes(-len(data) % tarfile.BLOCKSIZE))
    out.write(bytes(2 * tarfile.BLOCKSIZE))
    return out.getvalue()


def damage(data: bytes, how: str, where: int, byte: int) -> bytes:
    if not data or how == "none":
        return data
    at = where % len(data)
    if how == "truncate":
        return data[:at]
    if how == "flip":
        return data[:at] + bytes([data[at] ^ (byte or 1)]) + data[at + 1 :]
    return data + bytes([byte]) * where  # "append"


COMPRESS = {"none": lambda b: b, "gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}

archives = st.one_of(
    st.builds(
        lambda members, fmt, comp, how, where, byte: damage(
            COMPRESS[comp](build_tar(members, fmt)), how, where, byte
        ),
        st.lists(member, max_size=6),
        st.sampled_from([tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT]),
        st.sampled_from(list(COMPRESS)),
        st.sampled_from(["none", "none", "truncate", "flip", "append"]),
        st.integers(0, 4096),
        st.integers(0, 255),
    ),
    st.binary(max_size=2048),
    st.binary(max_size=64).map(gzip.compress),
)
limits = st.sampled_from(
    [UnpackLimits(), UnpackLimits(max_bytes=100, max_files=3), UnpackLimits(max_bytes=1, max_files=1)]
)

ZEROS_BOMB = gzip.compress(
    build_tar(
        [{"name": "zeros", "type": tarfile.REGTYPE, "link": "", "data": b"", "size": 2**30, "mode": 0o644}],
        tarfile.GNU_FORMAT,
    )
)


def everything_under(folder: Path) -> list[Path]:
    return [Path(root) / name for root, dirs, files in os.walk(folder) for name in dirs + files]

# A symlink named with a trailing slash, pointing out: once let through by tarfile's own filter.
SLASHED_LINK_OUT = build_tar(
    [{"name": "dir/", "type": tarfile.SYMTYPE, "link": "../outside", "data": b"", "size": None,
      "mode": 0o777}],
    tarfile.GNU_FORMAT,
)


@given(archives, limits)
@example(SLASHED_LINK_OUT, UnpackLimits())
@example(ZEROS_BOMB, UnpackLimits())
@example(b"", UnpackLimits())
@example(gzip.compress(b"\0" * 1024)[:-9], UnpackLimits())
def test_any_upload_is_checked_or_refused_as_a_context_error(archive, limit):
    try:
        check_archive(archive, limit)
    except ContextError as exc:
        assert str(exc)


HARD_LINK_TO_NOTHING = build_tar(
    [
        {
            "name": "Dockerfile",
            "type": tarfile.LNKTYPE,
            "link": "nowhere",
            "data": b"",
            "size": None,
            "mode": 0o644,
        }
    ],
    tarfile.GNU_FORMAT,
)


def pax_with_path(path: str) -> bytes:
    """A PAX tar of one empty file whose `path` record says `path` (a NUL byte is allowed there)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("x")
        info.pax_headers = {"path": path}
        tar.addfile(info, io.BytesIO(b""))
    return out.getvalue()


NUL_IN_A_PAX_PATH = pax_with_path("a\0b")
SYMLINK_TO_ITSELF_OVER_A_DIR = build_tar(
    [
        {"name": "a", "type": tarfile.DIRTYPE, "link": "", "data": b"", "size": None, "mode": 0o755},
        {"name": "a", "type": tarfile.SYMTYPE, "link": "a", "data": b"", "size": None, "mode": 0o777},
    ],
    tarfile.GNU_FORMAT,
)


@given(archives, limits)
@example(ZEROS_BOMB, UnpackLimits())
@example(NUL_IN_A_PAX_PATH, UnpackLimits())  # once a ValueError (embedded null byte) out of unpacking
@example(SYMLINK_TO_ITSELF_OVER_A_DIR, UnpackLimits())  # once a RecursionError out of tarfile
@example(HARD_LINK_TO_NOTHING, UnpackLimits())  # once a KeyError out of tarfile, a crash per delivery
@example(
    gzip.compress(
        build_tar(
            [
                {
                    "name": "Dockerfile",
                    "type": tarfile.REGTYPE,
                    "link": "",
                    "data": b"FROM a",
                    "size": None,
                    "mode": 0o644,
                }
            ],
            tarfile.GNU_FORMAT,
        )
    )[:40],
    UnpackLimits(),
)  # cut short: once an EOFError out of unpacking
def test_unpacking_stays_in_its_folder_and_within_its_limits(archive, limit):
    try:
        check_archive(archive, limit)
        checked = True
    except ContextError:
        checked = False
    with tempfile.TemporaryDirectory(prefix="bt-prop-") as tmp:
        root = Path(tmp)
        upload, dest = root / "context.tar.gz", root / "out" / "context"
        upload.write_bytes(archive)
        try:
            extract_archive(upload, dest, limit)
        except ContextTooLarge:
            assert not checked, "the check let through what unpacking found too large"
        except ContextError as exc:
            assert str(exc)
        outside = [
            p for p in everything_under(root) if p not in (upload, dest.parent) and not p.is_relative_to(dest)
        ]
        assert not outside, outside
        written = 0
        for path in everything_under(dest) if dest.exists() else []:
            if path.is_symlink():
                assert Path(os.path.realpath(path)).is_relative_to(dest.resolve()), path
            elif path.is_file():
                written += path.stat().st_size
        assert written <= limit.max_bytes
        assert len(everything_under(dest) if dest.exists() else []) <= limit.max_files + 64  # + parent dirs
