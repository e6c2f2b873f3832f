"""The rebase builder: a new image from the task's last one, with the new base's layers in place of
the old base's, made of registry API calls only (no build, no context, no clone).

For each platform of the image (one manifest, or each entry of an index):
1. read the image's manifest and config, and the old and new base's (the same platform's entry of
   a base index): three manifests and three configs, a few KiB;
2. refuse (RebaseRefused: the worker rebuilds instead) when the image's bottom layers are not the
   old base's, when the base is in another registry (its layers would have to be copied), or, when
   the policy asks for proof (`auto`), when the new base's configuration differs from the old
   one's besides its layers (shared.domain.rebase);
3. write the new config (diff_ids and history rewritten, everything else kept) and the manifest;
   every layer reaches the target repository by a cross-repository blob mount, never a download
   or an upload; a layer already there is not even mounted.
An index gets a new index naming the rebased manifests, with the annotations of the run. The
manifests go up by digest first; the tags move last, all after `still_ours` said the run is still
this attempt's: a rebase is re-done whole on redelivery, and doing it twice writes the same bytes.

Registry access is the registry module's (shared.adapters.registry.ImageStore), signed in with the
task's credentials. Each run's log says how many bytes it moved: the manifests and configs it read and wrote.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from shared.adapters.registry import ImageStore
from shared.domain.builds import BuildRequest, BuildResult, LogSink
from shared.domain.credentials import RegistryCredential
from shared.domain.image_ref import ImageRef
from shared.domain.manifests import RawManifest
from shared.domain.platforms import index_platforms, key, pick
from shared.domain.rebase import (
    BASE_DIGEST,
    BASE_NAME,
    NotOnBase,
    RebasePlan,
    RebaseRefused,
    config_verdict,
    layer_digests,
    rebase_image,
)
from shared.domain.vocabulary import BuilderKind, RunStatus, utc_now


class ImageCheck(Protocol):
    def check_image(self, image: str, argv: tuple[str, ...], request: BuildRequest,
                    log: LogSink) -> int | None:
        """Run argv in `image`: its exit code, or None when stopped (deadline or cancel)."""


class SignedInRegistry(Protocol):
    """The registry module, as the rebase uses it: a store of blobs and manifests, signed in."""

    def images(self, reference: str, credentials: tuple[RegistryCredential, ...] = ()) -> ImageStore: ...


@dataclass
class _Platform:
    manifest: RawManifest
    rebased: dict[str, Any]
    config: bytes
    new_base: RawManifest
    base_layers: list[str]


def _dumps(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


class RebaseBuilder:
    kind = BuilderKind.REBASE

    def __init__(self, registry: SignedInRegistry, checker: ImageCheck | None = None):
        self.registry = registry
        # Runs a task's rebase check (buildah); None where nothing can run an image (ACR).
        self.checker = checker
        # Registry calls made together (a handful at a time); threads live as long as the builder.
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="rebase")

    def rebase(self, request: BuildRequest, plan: RebasePlan, log: LogSink) -> BuildResult:
        """The rebased image pushed under every tag of the run; RebaseRefused when it must be rebuilt,
        RegistryError when a registry call failed (the run fails with its message)."""
        image, old_base, new_base = (ImageRef.parse(r) for r in (plan.image, plan.old_base, plan.new_base))
        if image.registry != new_base.registry or any(ImageRef.parse(t).registry != image.registry
                                                      for t in request.images):
            raise RebaseRefused("the base is in another registry than the image: its layers would be copied")
        store = _CountedStore(self.registry.images(plan.image, request.credentials))
        top = self._manifest(store, plan.image)
        log(f"rebase {plan.image}: from {plan.old_base} onto {plan.new_base}")
        if top.is_index:
            entries = index_platforms(top.document())
            platforms = {p: self._manifest(store, f"{image.name}@{d}") for p, d in entries.items()}
        else:
            platforms = {key(request.platform): top}
        done: dict[str, _Platform] = {}
        for platform, manifest in platforms.items():
            done[platform] = self._rebase_one(store, image.name, manifest, platform, plan, request)
            log(f"  {platform}: {len(done[platform].base_layers)} base layers swapped")
        mounted = sum(self._stage_blobs(store, ImageRef.parse(target), part, image, new_base)
                      for target in request.images for part in done.values())
        if top.is_index:
            index = top.document()
            by_old = {p.manifest.digest: p for p in done.values()}
            for entry in index.get("manifests") or []:
                rebased = by_old.get(entry.get("digest"))
                if rebased is not None:
                    body = _dumps(rebased.rebased)
                    entry["digest"], entry["size"] = _digest_of(body), len(body)
            index["annotations"] = {**(index.get("annotations") or {}), **self._annotations(request, plan)}
            body, media_type = _dumps(index), top.media_type or str(index.get("mediaType"))
        else:
            only = next(iter(done.values()))
            body, media_type = _dumps(only.rebased), only.manifest.media_type or str(
                only.rebased.get("mediaType"))
        output = _digest_of(body)
        for target in request.images:
            repo = ImageRef.parse(target)
            # Every manifest goes up by digest first (untagged: harmless if the run stops here). A tag
            # never names an index with a hole, nor an image its check has not passed.
            self._in_parallel([(self._put, store, f"{repo.name}@{_digest_of(_dumps(part.rebased))}",
                                _dumps(part.rebased), part.manifest.media_type)
                               for part in (done.values() if top.is_index else ())])
            self._put(store, f"{repo.name}@{output}", body, media_type)
        built_at = utc_now()  # the rebased image is in the registry by digest; the tags follow
        if plan.check:
            self._check(f"{ImageRef.parse(request.images[0]).name}@{output}", plan, request, log)
        if request.cancel.is_set():
            return BuildResult(RunStatus.CANCELED, reason="canceled by request")
        if not request.still_ours():
            log("not tagging: another attempt has taken this run over")
            return BuildResult(RunStatus.CANCELED, reason="taken over by another attempt before the push")
        for target in request.images:
            self._put(store, target, body, media_type)
            log(f"pushed {target}@{output}")
        log(f"rebase moved {store.moved_bytes} bytes (manifests and configs read and written); "
            f"{mounted} layer mounts, no layer downloaded or uploaded")
        first = done.get(key(request.platform)) or next(iter(done.values()))
        return BuildResult(RunStatus.SUCCEEDED, output_digest=output,
                           base_digests={plan.base: first.new_base.digest},
                           base_layers={plan.base: first.base_layers}, built_at=built_at, pushed_at=utc_now())

    def _check(self, image: str, plan: RebasePlan, request: BuildRequest, log: LogSink) -> None:
        """The task's rebase check in the rebased image; RebaseRefused (the run rebuilds) unless it
        exits 0. The command is the task's own text, logged as given (a task holds no secret there)."""
        if self.checker is None:
            raise RebaseRefused("the rebase check cannot run with this builder")
        log(f"rebase check in {image}: {shlex.join(plan.check)}")
        code = self.checker.check_image(image, plan.check, request, log)
        if code is None and not request.cancel.is_set():
            raise RebaseRefused("the rebase check did not finish in time")
        if code not in (None, 0):
            raise RebaseRefused(f"the rebase check `{shlex.join(plan.check)}` failed (exit {code})")

    # ---- one platform ------------------------------------------------------------------------
    def _rebase_one(self, store: _CountedStore, image_name: str, manifest: RawManifest, platform: str,
                    plan: RebasePlan, request: BuildRequest) -> _Platform:
        # Reads that do not depend on each other are made together: a rebase is a few round trips.
        old_base, new_base = self._in_parallel([(self._platform_manifest, store, plan.old_base, platform),
                                                (self._platform_manifest, store, plan.new_base, platform)])
        document = manifest.document()
        old_document, new_document = old_base.document(), new_base.document()
        image_config, old_config, new_config = self._in_parallel([
            (self._config, store, image_name, document), (self._config, store, plan.old_base, old_document),
            (self._config, store, plan.new_base, new_document)])
        if plan.prove_config and (verdict := config_verdict(old_config, new_config)):
            raise RebaseRefused(verdict)
        annotations = self._annotations(request, plan) | {BASE_DIGEST: new_base.digest}
        try:
            rebased = rebase_image(document, image_config, (old_document, old_config),
                                   (new_document, new_config), annotations)
        except NotOnBase as exc:
            raise RebaseRefused(str(exc)) from None
        config = _dumps(rebased.config)
        rebased.manifest["config"] = {**rebased.manifest["config"], "digest": _digest_of(config),
                                      "size": len(config)}
        return _Platform(manifest, rebased.manifest, config, new_base, layer_digests(new_document))

    def _stage_blobs(self, store: _CountedStore, target: ImageRef, part: _Platform, image: ImageRef,
                     new_base: ImageRef) -> int:
        """Every blob of the rebased manifest in the target repository, all at once: the config
        uploaded (a few hundred bytes; again is harmless), each layer of another repository mounted
        from it (a mount of a blob the target has already is a no-op). The mounts made."""
        base_layers = set(part.base_layers)
        mounts = [(digest, (new_base if digest in base_layers else image).repository)
                  for digest in layer_digests(part.rebased)]
        mounts = [(digest, source) for digest, source in mounts if source != target.repository]
        calls: list[tuple[Any, ...]] = [(store.upload_blob, target.name, part.config)]
        calls += [(store.mount_blob, target.name, digest, source) for digest, source in mounts]
        _, *mounted = self._in_parallel(calls)
        if not all(mounted):
            raise RebaseRefused(f"{target.registry} does not mount blobs across repositories")
        return len(mounts)

    # ---- registry calls, counted -------------------------------------------------------------
    def _manifest(self, store: _CountedStore, reference: str) -> RawManifest:
        return store.manifest(reference)

    def _platform_manifest(self, store: _CountedStore, reference: str, platform: str) -> RawManifest:
        found = self._manifest(store, reference)
        if not found.is_index:
            return found
        entry = pick(index_platforms(found.document()), platform)
        if entry is None:
            raise RebaseRefused(f"the base {reference} has no image for {platform}")
        return self._manifest(store, f"{ImageRef.parse(reference).name}@{entry}")

    def _config(self, store: _CountedStore, reference: str, manifest: dict[str, Any]) -> dict[str, Any]:
        digest = str((manifest.get("config") or {}).get("digest"))
        body = store.blob(reference, digest)
        found = json.loads(body)
        if not isinstance(found, dict):
            raise RebaseRefused(f"the config {digest} is not a JSON object")
        return found

    def _in_parallel(self, calls: list[tuple[Any, ...]]) -> list[Any]:
        """Each (function, *args) called on the pool; their results in order (the first error raised)."""
        futures = [self._pool.submit(call[0], *call[1:]) for call in calls]
        return [future.result() for future in futures]

    def _put(self, store: _CountedStore, reference: str, body: bytes, media_type: str | None) -> None:
        store.put_manifest(reference, body, media_type or "application/vnd.oci.image.manifest.v1+json")

    def _annotations(self, request: BuildRequest, plan: RebasePlan) -> dict[str, str]:
        return {**request.annotations, BASE_NAME: plan.base,
                BASE_DIGEST: ImageRef.parse(plan.new_base).digest or ""}


def _digest_of(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


class _CountedStore:
    """One rebase's registry calls, with the bytes of the manifests and configs they read and write
    (a layer never passes through here: layers are mounted)."""

    def __init__(self, store: ImageStore):
        self.store = store
        self.moved_bytes = 0
        self._lock = threading.Lock()

    def _count(self, size: int) -> None:
        with self._lock:  # calls are made from the builder's pool
            self.moved_bytes += size

    def manifest(self, reference: str) -> RawManifest:
        found = self.store.manifest(reference)
        self._count(len(found.body))
        return found

    def blob(self, reference: str, digest: str) -> bytes:
        body = self.store.blob(reference, digest)
        self._count(len(body))
        return body

    def upload_blob(self, reference: str, data: bytes) -> str:
        digest = self.store.upload_blob(reference, data)
        self._count(len(data))
        return digest

    def mount_blob(self, reference: str, digest: str, source_repository: str) -> bool:
        return self.store.mount_blob(reference, digest, source_repository)

    def put_manifest(self, reference: str, body: bytes, media_type: str) -> None:
        self.store.put_manifest(reference, body, media_type)
        self._count(len(body))
