"""`base changes`: read two digests of a base from its registry and say what changed between them
(shared.domain.base_changes compares and classifies), and note the change on the wave it started.

Reading: the manifests (an index is followed to each platform's manifest), each image's config
(bounded, MAX_CONFIG_BYTES) and its layers as streams, each through the registry port with the
credentials of a task built FROM the base (or the app's identity for ACR). A layer is read once per
process (its digest names its content: LAYER_CACHE_SIZE results are kept), and a layer kept from the
old digest to the new one is not read again. Every read stops at a deadline, and a layer at
MAX_LAYER_BYTES: a slow or hostile registry costs bounded time.

Defaults: the new digest is what the tag points at now; the old one is the digest the dependents
last built on (the dependency index) when they agree on one, else the previous digest pushed (the
decisions); a multi-platform base's dependents building different platforms built on different
manifests, and the previous push compares every platform.

On a wave (`WaveChanges.note`): computed once per wave, by the first worker of the wave, before its
build, within NOTE_SECONDS. Dispatch is never delayed (it happens after the wave is planned), and a
change that cannot be computed in time is noted as unknown, with the reason; the build goes on
either way. The other first workers of a wave compute it too if they find none (a few redundant
reads in the worst case; the first save wins and every log names the same result).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import IO, Any, Protocol

from shared.domain import platforms
from shared.domain.base_changes import (
    MAX_CONFIG_BYTES,
    BaseChange,
    ImageSnapshot,
    LayerFiles,
    LayerUnreadable,
    compare_platforms,
    read_layer,
    snapshot,
)
from shared.domain.credentials import RegistryCredential
from shared.domain.image_ref import ImageRef, InvalidReference
from shared.domain.manifests import Failure, RegistryError
from shared.domain.waves import PlatformNote, WaveConflict, WaveNotFound
from shared.service_layer.dependencies import DependencyIndex
from shared.service_layer.ports import DecisionLog, TaskRepository, WaveRepository

log = logging.getLogger(__name__)

# Compressed bytes read from one layer at most (a base's layer is rarely above a few hundred MiB).
MAX_LAYER_BYTES = 4 * 1024**3
DEFAULT_DEADLINE_SECONDS = 120.0
NOTE_SECONDS = 60.0
LAYER_CACHE_SIZE = 256
UNREADABLE_MEDIA = ("+zstd", "nondistributable", "foreign")


class ImageReader(Protocol):
    """The registry reads `base changes` needs (shared.adapters.registry.RegistryClient)."""

    def manifest(self, reference: str, credentials: Sequence[RegistryCredential] = ()) \
            -> tuple[str, dict[str, Any]]: ...

    def blob(self, reference: str, digest: str,
             credentials: Sequence[RegistryCredential] = ()) -> AbstractContextManager[IO[bytes]]: ...


class ChangesUnavailable(RuntimeError):
    """The change cannot be computed (the registry failed, the deadline passed); str() says why."""


class ImageNotFound(LookupError):
    """The base, or one of the digests, is not in its registry."""


class NoPreviousDigest(ValueError):
    """No old digest was given and none is known: the caller should name one (--from)."""


class _Bounded:
    """A read-only stream that stops at a byte budget and at a deadline."""

    def __init__(self, stream: IO[bytes], limit: int, deadline: float):
        self.stream, self.left, self.deadline = stream, limit, deadline

    def read(self, size: int = -1) -> bytes:
        if time.monotonic() > self.deadline:
            raise ChangesUnavailable("the deadline passed while reading a layer")
        if self.left <= 0:
            raise ChangesUnavailable(f"a layer is larger than {MAX_LAYER_BYTES} bytes: not read")
        want = self.left if size is None or size < 0 else min(size, self.left)
        data = self.stream.read(want)
        self.left -= len(data)
        return data


class BaseChanges:
    def __init__(self, reader: ImageReader, index: DependencyIndex, decisions: DecisionLog,
                 tasks: TaskRepository, max_layer_bytes: int = MAX_LAYER_BYTES):
        self.reader = reader
        self.index = index
        self.decisions = decisions
        self.tasks = tasks
        self.max_layer_bytes = max_layer_bytes
        self._layers: OrderedDict[str, LayerFiles] = OrderedDict()

    # ---- which digests -----------------------------------------------------------------------
    def credentials(self, base: str) -> list[RegistryCredential]:
        """The credentials of a task built FROM `base` for its registry (any one will read it)."""
        registry = ImageRef.parse(base).registry
        for row in self.index.dependents(base):
            try:
                task = self.tasks.get(row.task)
            except LookupError:
                continue
            found = [c for c in task.credentials if c.login_server == registry]
            if found:
                return found
        return []

    def previous_digest(self, base: str, current: str) -> str | None:
        """The digest the dependents last built on when they agree on one, else the newest other
        digest a push of `base` was decided on, else the one most of them built on. (Tasks building
        different platforms of a multi-platform base each built on their platform's manifest:
        compared with one of those, only that platform would be; the previous push has them all.)"""
        built = Counter(row.built_digest for row in self.index.dependents(base)
                        if row.built_digest and row.built_digest != current)
        if len(built) == 1:
            return next(iter(built))
        for decision in self.decisions.recent(top=50, image=base):
            if decision.digest and decision.digest != current and not decision.digest.endswith("0" * 64):
                return decision.digest
        return built.most_common(1)[0][0] if built else None

    def compare(self, image: str, old: str | None = None, new: str | None = None,
                deadline_seconds: float = DEFAULT_DEADLINE_SECONDS) -> BaseChange:
        """What changed in `image` (a tag) from `old` to `new` (digests; see the defaults above)."""
        try:
            ref = ImageRef.parse(image)
        except InvalidReference as exc:
            raise ValueError(str(exc)) from None
        base = f"{ref.name}:{ref.tag or 'latest'}"
        credentials = self.credentials(base)
        deadline = time.monotonic() + deadline_seconds
        try:
            if new is None:
                new, _ = self.reader.manifest(base, credentials)
            if old is None:
                old = self.previous_digest(base, new)
                if old is None:
                    raise NoPreviousDigest(f"no earlier digest of {base} is known: name one with --from")
            old_images = self._platform_images(ref.name, old, credentials, deadline)
            new_images = self._platform_images(ref.name, new, credentials, deadline)
        except RegistryError as exc:
            if exc.failure == Failure.NOT_FOUND:
                raise ImageNotFound(str(exc)) from None
            raise ChangesUnavailable(str(exc)) from None
        except (ChangesUnavailable, NoPreviousDigest):
            raise
        except Exception as exc:
            # A connection broken mid-stream, a redirect's storage failing: its kind only (the text
            # of such errors may quote a signed blob URL).
            raise ChangesUnavailable(f"reading {base} failed: {exc.__class__.__name__}") from None
        old_images, new_images = _same_platforms(old_images, new_images)
        return compare_platforms(base, old, new, old_images, new_images)

    # ---- reading images ----------------------------------------------------------------------
    def _platform_images(self, name: str, digest: str, credentials: list[RegistryCredential],
                         deadline: float) -> dict[str, ImageSnapshot]:
        """Platform -> snapshot of the manifest `digest` names (every platform of an index; a
        single manifest keyed by its config's platform and marked with a leading '=')."""
        _, document = self.reader.manifest(f"{name}@{digest}", credentials)
        if document.get("mediaType") in platforms.INDEX_MEDIA_TYPES or "manifests" in document:
            return {platform: self._image(name, manifest, credentials, deadline)
                    for platform, manifest in platforms.index_platforms(document).items()}
        image = self._image(name, digest, credentials, deadline, document)
        return {"=" + _platform_key(image.platform): image}

    def _image(self, name: str, digest: str, credentials: list[RegistryCredential], deadline: float,
               document: dict[str, Any] | None = None) -> ImageSnapshot:
        if document is None:
            _, document = self.reader.manifest(f"{name}@{digest}", credentials)
        config_ref = document.get("config") if isinstance(document.get("config"), dict) else {}
        config: dict[str, Any] = {}
        if isinstance(config_ref, dict) and isinstance(config_ref.get("digest"), str):
            with self.reader.blob(name, config_ref["digest"], credentials) as stream:
                raw = stream.read(MAX_CONFIG_BYTES + 1)
            if len(raw) > MAX_CONFIG_BYTES:
                raise ChangesUnavailable(f"the config of {name}@{digest} is larger than "
                                         f"{MAX_CONFIG_BYTES} bytes")
            try:
                parsed = json.loads(raw)
            except ValueError:
                raise ChangesUnavailable(f"the config of {name}@{digest} is not JSON") from None
            config = parsed if isinstance(parsed, dict) else {}
        layers = [entry for entry in document.get("layers") or [] if isinstance(entry, dict)
                  and isinstance(entry.get("digest"), str)]
        files = [self._layer(name, entry, credentials, deadline) for entry in layers]
        return snapshot(digest, config, [entry["digest"] for entry in layers], files)

    def _layer(self, name: str, entry: dict[str, Any], credentials: list[RegistryCredential],
               deadline: float) -> LayerFiles:
        digest = entry["digest"]
        cached = self._layers.get(digest)
        if cached is not None:
            self._layers.move_to_end(digest)
            return cached
        media = str(entry.get("mediaType") or "")
        if any(kind in media for kind in UNREADABLE_MEDIA):
            return LayerFiles(notes=[f"layer {digest[:19]} ({media}) is not read"])
        if time.monotonic() > deadline:
            raise ChangesUnavailable("the deadline passed before every layer was read")
        try:
            with self.reader.blob(name, digest, credentials) as stream:
                files = read_layer(_Bounded(stream, self.max_layer_bytes, deadline))  # type: ignore[arg-type]
        except LayerUnreadable as exc:
            files = LayerFiles(notes=[f"layer {digest[:19]}: {exc}"])
        self._layers[digest] = files
        if len(self._layers) > LAYER_CACHE_SIZE:
            self._layers.popitem(last=False)
        return files


def _platform_key(text: str) -> str:
    try:
        return platforms.key(text)
    except platforms.InvalidPlatform:
        return text


def _same_platforms(old: dict[str, ImageSnapshot], new: dict[str, ImageSnapshot]) \
        -> tuple[dict[str, ImageSnapshot], dict[str, ImageSnapshot]]:
    """Keys without the single-manifest mark; a single manifest against an index compares with the
    index's manifest of its own platform only (a task built on one platform of a multi-platform base
    recorded that platform's digest)."""
    single_old = [k for k in old if k.startswith("=")]
    single_new = [k for k in new if k.startswith("=")]
    old = {k.lstrip("="): v for k, v in old.items()}
    new = {k.lstrip("="): v for k, v in new.items()}
    if single_old and not single_new:
        new = {k: v for k, v in new.items() if k in old}
    elif single_new and not single_old:
        old = {k: v for k, v in old.items() if k in new}
    return old, new


class WaveChanges:
    """The change a wave's base push made, noted on the wave once (see the module docstring)."""

    def __init__(self, changes: BaseChanges, waves: WaveRepository, note_seconds: float = NOTE_SECONDS):
        self.changes = changes
        self.waves = waves
        self.note_seconds = note_seconds

    def _note_on_decision(self, event_id: str | None, line: str) -> None:
        """The change on the decision of the push that started the wave too (the decision every
        run of the wave points to); stored again under the same key, so nothing else changes."""
        if not event_id:
            return
        try:
            decision = self.changes.decisions.seen(event_id)
            if decision is not None and decision.change is None:
                self.changes.decisions.record(replace(decision, change=line), mark_seen=False)
        except Exception:  # noqa: BLE001 - best effort: the wave has it
            log.warning("the change could not be noted on decision %s", event_id, exc_info=True)

    def note(self, wave_id: str) -> str | None:
        """The wave's change in one line (computed now if not yet noted); None for a wave that was
        not started by a base push (a manual run's) or is gone. Never raises."""
        try:
            wave, etag = self.waves.get(wave_id)
        except WaveNotFound:
            return None
        if wave.base_change is not None:
            return wave.base_change
        image, sep, digest = wave.root.partition("@")
        if not sep or not digest.startswith("sha256:") or " " in image:
            return None
        notes: dict[str, PlatformNote] = {}
        try:
            old = self.changes.previous_digest(image, digest)
            if old is None:
                line = "unknown (no earlier digest is known)"
            else:
                change = self.changes.compare(image, old, digest, self.note_seconds)
                line = change.summary()
                notes = {p.platform: PlatformNote(str(p.kind), p.new_digest) for p in change.platforms}
        except (ChangesUnavailable, ImageNotFound) as exc:  # our own words, safe to keep
            log.warning("the change of %s could not be computed: %s", wave.root, exc)
            line = f"unknown ({exc})"
        except Exception as exc:  # noqa: BLE001 - best effort: the build goes on without it
            log.warning("the change of %s could not be computed: %s", wave.root, exc.__class__.__name__)
            line = f"unknown ({exc.__class__.__name__})"
        for _attempt in (1, 2):
            try:
                self.waves.save(replace(wave, base_change=line, platform_changes=notes), etag)
            except WaveConflict:
                # Another worker noted it (theirs stands), or the wave's counts moved: again.
                wave, etag = self.waves.get(wave_id)
                if wave.base_change is not None:
                    return wave.base_change
                continue
            self._note_on_decision(wave.event_id, line)
            break
        return line
