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
task's credentials. `moved_bytes` counts what went over the wire: manifests, configs and mount calls.
"""

from __future__ import annotations

import hashlib
import json
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
from shared.domain.vocabulary import BuilderKind, RunStatus


class ImageStores(Protocol):
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

    def __init__(self, registry: ImageStores):
        self.registry = registry
        self.moved_bytes = 0

    def rebase(self, request: BuildRequest, plan: RebasePlan, log: LogSink) -> BuildResult:
        """The rebased image pushed under every tag of the run; RebaseRefused when it must be rebuilt,
        RegistryError when a registry call failed (the run fails with its message)."""
        self.moved_bytes = 0
        image, old_base, new_base = (ImageRef.parse(r) for r in (plan.image, plan.old_base, plan.new_base))
        if image.registry != new_base.registry or any(ImageRef.parse(t).registry != image.registry
                                                      for t in request.images):
            raise RebaseRefused("the base is in another registry than the image: its layers would be copied")
        store = self.registry.images(plan.image, request.credentials)
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
        if request.cancel.is_set():
            return BuildResult(RunStatus.CANCELED, reason="canceled by request")
        if not request.still_ours():
            log("not pushing: another attempt has taken this run over")
            return BuildResult(RunStatus.CANCELED, reason="taken over by another attempt before the push")

        mounted = 0
        for target in request.images:
            repo = ImageRef.parse(target)
            for part in done.values():
                mounted += self._stage_blobs(store, repo, part, image, new_base)
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
            for part in done.values() if top.is_index else ():
                part_body = _dumps(part.rebased)
                self._put(store, f"{repo.name}@{_digest_of(part_body)}", part_body, part.manifest.media_type)
            self._put(store, target, body, media_type)
            log(f"pushed {target}@{output}")
        log(f"rebase moved {self.moved_bytes} bytes (manifests, configs, requests); "
            f"{mounted} layer mounts, no layer downloaded or uploaded")
        first = done.get(key(request.platform)) or next(iter(done.values()))
        return BuildResult(RunStatus.SUCCEEDED, output_digest=output,
                           base_digests={plan.base: first.new_base.digest},
                           base_layers={plan.base: first.base_layers})

    # ---- one platform ------------------------------------------------------------------------
    def _rebase_one(self, store: ImageStore, image_name: str, manifest: RawManifest, platform: str,
                    plan: RebasePlan, request: BuildRequest) -> _Platform:
        old_base = self._platform_manifest(store, plan.old_base, platform)
        new_base = self._platform_manifest(store, plan.new_base, platform)
        document = manifest.document()
        old_document, new_document = old_base.document(), new_base.document()
        image_config = self._config(store, image_name, document)
        old_config = self._config(store, plan.old_base, old_document)
        new_config = self._config(store, plan.new_base, new_document)
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

    def _stage_blobs(self, store: ImageStore, target: ImageRef, part: _Platform, image: ImageRef,
                     new_base: ImageRef) -> int:
        """Every blob of the rebased manifest in the target repository: the config uploaded (a few
        hundred bytes), each layer mounted from the repository that has it. The mounts made."""
        mounts = 0
        base_layers = set(part.base_layers)
        config_digest = part.rebased["config"]["digest"]
        if not self._has(store, target.name, config_digest):
            store.upload_blob(target.name, part.config)
            self.moved_bytes += len(part.config)
        for digest in layer_digests(part.rebased):
            source = new_base if digest in base_layers else image
            if source.repository == target.repository or self._has(store, target.name, digest):
                continue
            if not store.mount_blob(target.name, digest, source.repository):
                raise RebaseRefused(f"{target.registry} does not mount blobs across repositories")
            mounts += 1
        return mounts

    # ---- registry calls, counted -------------------------------------------------------------
    def _manifest(self, store: ImageStore, reference: str) -> RawManifest:
        found = store.manifest(reference)
        self.moved_bytes += len(found.body)
        return found

    def _platform_manifest(self, store: ImageStore, reference: str, platform: str) -> RawManifest:
        found = self._manifest(store, reference)
        if not found.is_index:
            return found
        entry = pick(index_platforms(found.document()), platform)
        if entry is None:
            raise RebaseRefused(f"the base {reference} has no image for {platform}")
        return self._manifest(store, f"{ImageRef.parse(reference).name}@{entry}")

    def _config(self, store: ImageStore, reference: str, manifest: dict[str, Any]) -> dict[str, Any]:
        digest = str((manifest.get("config") or {}).get("digest"))
        body = store.blob(reference, digest)
        self.moved_bytes += len(body)
        found = json.loads(body)
        if not isinstance(found, dict):
            raise RebaseRefused(f"the config {digest} is not a JSON object")
        return found

    def _has(self, store: ImageStore, repository: str, digest: str) -> bool:
        return store.has_blob(repository, digest)

    def _put(self, store: ImageStore, reference: str, body: bytes, media_type: str | None) -> None:
        store.put_manifest(reference, body, media_type or "application/vnd.oci.image.manifest.v1+json")
        self.moved_bytes += len(body)

    def _annotations(self, request: BuildRequest, plan: RebasePlan) -> dict[str, str]:
        return {**request.annotations, BASE_NAME: plan.base,
                BASE_DIGEST: ImageRef.parse(plan.new_base).digest or ""}


def _digest_of(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()
