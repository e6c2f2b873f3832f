"""`base changes` reading images through the ImageReader port (an in-memory registry of our own):
bounds on layers and time, unread media types, the layer cache, and the wave's note when reading
fails (shared.service_layer.base_changes)."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import tarfile
from collections import Counter

import pytest

from shared.domain.base_changes import DPKG_STATUS, ChangeKind
from shared.domain.manifests import Failure, RegistryError
from shared.domain.runs import RunIds
from shared.domain.waves import Wave
from shared.service_layer.base_changes import BaseChanges, ChangesUnavailable, WaveChanges
from shared.service_layer.dependencies import DependencyIndex
from tests.fakes import FakeDecisionLog, FakeDependencyTable, FakeTaskRepository, FakeWaveRepository

IMAGE = "registry.test/base/debian:12"
GZIP_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class MemoryRegistry:
    """Blobs and manifests by digest; counts blob reads."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[str, dict] = {}
        self.reads: Counter[str] = Counter()
        self.fail: RegistryError | None = None

    def blob_of(self, data: bytes) -> str:
        digest = _digest(data)
        self.blobs[digest] = data
        return digest

    def image(self, layers: list[tuple[bytes, str]], env: list[str]) -> str:
        config = self.blob_of(json.dumps({"os": "linux", "architecture": "amd64", "config": {"Env": env},
                                          "rootfs": {"diff_ids": [_digest(b) for b, _ in layers]}}).encode())
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"digest": config},
                    "layers": [{"mediaType": media, "digest": self.blob_of(gzip.compress(data))}
                               for data, media in layers]}
        digest = _digest(json.dumps(manifest).encode())
        self.manifests[digest] = manifest
        return digest

    def manifest(self, reference: str, credentials=()):
        if self.fail:
            raise self.fail
        digest = reference.rsplit("@", 1)[1]
        return digest, self.manifests[digest]

    @contextlib.contextmanager
    def blob(self, reference: str, digest: str, credentials=()):
        self.reads[digest] += 1
        yield io.BytesIO(self.blobs[digest])


def tar_of(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return raw.getvalue()


def status(version: str) -> bytes:
    return f"Package: bash\nStatus: install ok installed\nVersion: {version}\n".encode()


@pytest.fixture
def registry() -> MemoryRegistry:
    return MemoryRegistry()


def service(registry: MemoryRegistry, **kwargs) -> BaseChanges:
    return BaseChanges(registry, DependencyIndex(FakeDependencyTable()), FakeDecisionLog(),
                       FakeTaskRepository(), **kwargs)


def test_a_kept_layer_is_read_once_and_packages_compared(registry):
    big = tar_of({"usr/share/doc/x": b"x" * 5000})
    old = registry.image([(big, GZIP_LAYER), (tar_of({DPKG_STATUS: status("5.1")}), GZIP_LAYER)], [])
    new = registry.image([(big, GZIP_LAYER), (tar_of({DPKG_STATUS: status("5.2")}), GZIP_LAYER)], [])
    change = service(registry).compare(IMAGE, old, new)
    assert change.kind == ChangeKind.PACKAGES
    assert [(u.old, u.new) for u in change.platforms[0].packages_upgraded] == [("5.1", "5.2")]
    big_blob = registry.manifests[old]["layers"][0]["digest"]
    assert registry.reads[big_blob] == 1


def test_a_layer_past_the_byte_budget_stops_the_comparison(registry):
    layer = tar_of({"opt/blob": bytes(range(256)) * 4096})  # ~1 MiB that gzip barely shrinks
    old = registry.image([(tar_of({}), GZIP_LAYER)], [])
    new = registry.image([(layer, GZIP_LAYER)], [])
    with pytest.raises(ChangesUnavailable, match="larger than"):
        service(registry, max_layer_bytes=1024).compare(IMAGE, old, new)


def test_the_deadline_stops_the_comparison(registry):
    old = registry.image([(tar_of({}), GZIP_LAYER)], [])
    new = registry.image([(tar_of({"a": b"a"}), GZIP_LAYER)], [])
    with pytest.raises(ChangesUnavailable, match="deadline"):
        service(registry).compare(IMAGE, old, new, deadline_seconds=-1)


def test_zstd_layers_are_noted_not_read(registry):
    old = registry.image([(tar_of({}), GZIP_LAYER)], ["A=1"])
    new = registry.image([(b"not read", "application/vnd.oci.image.layer.v1.tar+zstd")], ["A=1"])
    change = service(registry).compare(IMAGE, old, new)
    assert any("is not read" in note for note in change.platforms[0].notes)
    assert registry.reads[registry.manifests[new]["layers"][0]["digest"]] == 0


def test_a_wave_whose_change_cannot_be_read_notes_unknown_and_goes_on(registry):
    changes = service(registry)
    old = registry.image([(tar_of({}), GZIP_LAYER)], [])
    changes.decisions.record(_decision(old))
    waves = FakeWaveRepository(RunIds("da"))
    waves.create(Wave("w7", f"{IMAGE}@sha256:" + "2" * 64, None), [])
    registry.fail = RegistryError(Failure.UNREACHABLE, "cannot reach registry.test")
    line = WaveChanges(changes, waves).note("w7")
    assert line == "unknown (cannot reach registry.test)"
    assert waves.get("w7")[0].base_change == line


def _decision(digest: str):
    from shared.domain.decisions import Decision
    from shared.domain.vocabulary import EventSource, Outcome

    return Decision("ev1", EventSource.DISTRIBUTION, Outcome.NO_DEPENDENTS, "none", image=IMAGE,
                    digest=digest)


def test_the_cli_prints_the_change_and_the_wave_shows_it(registry):
    from cli.base_cmd import changes_text
    from cli.wave_cmd import wave_text

    old = registry.image([(tar_of({DPKG_STATUS: status("5.1"), "etc/os-release": b"ID=debian\n"}),
                           GZIP_LAYER)], ["A=1"])
    new = registry.image([(tar_of({DPKG_STATUS: status("5.2"), "etc/os-release": b"ID=debian\n"}),
                           GZIP_LAYER)], ["A=2"])
    change = service(registry).compare(IMAGE, old, new).to_dict()
    text = changes_text(json.loads(json.dumps(change)))
    assert text.splitlines()[0].endswith(": packages")
    assert "  upgraded bash 5.1 -> 5.2" in text and "  config Env: ['A=1'] -> ['A=2']" in text
    assert "  layers: 0 kept, 0 recompressed, 1 added, 1 removed" in text
    wave = Wave("w7", f"{IMAGE}@{new}", None, base_change=change["summary"]).to_dict()
    assert f"base change: {change['summary']}" in wave_text({**wave, "members": []})


def test_a_layer_read_failing_midway_says_its_kind_only(registry):
    old = registry.image([(tar_of({}), GZIP_LAYER)], [])
    new = registry.image([(tar_of({"a": b"a"}), GZIP_LAYER)], [])

    class Broken(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:
            raise ConnectionError("https://storage.test/blob?sig=SECRET-SIGNATURE broke")

    @contextlib.contextmanager
    def broken_blob(reference, digest, credentials=()):
        yield io.BufferedReader(Broken())

    registry.blob = broken_blob
    with pytest.raises(ChangesUnavailable) as raised:
        service(registry).compare(IMAGE, old, new)
    assert "SECRET" not in str(raised.value) and "ConnectionError" in str(raised.value)
