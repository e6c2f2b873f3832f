"""Rebase: moving an image onto a patched base by swapping the base's layers, without a build.

Three pure parts, used by the worker and the rebase builder (shared.adapters.builders.rebase):

- `build_annotations`: the OCI annotations every image basetrigger builds carries (where it came
  from, and which run and base event made it);
- the `auto` rule: a rebase is provably equivalent to a rebuild when the final stage only adds
  files or metadata on top of its base (`final_stage_verdict`) and the new base's configuration
  equals the old one's except for its layers (`config_verdict`); each returns why not, or None;
- `rebase_image`: the new manifest and config of one platform's image, given the old and new base's
  manifests and configs; NotOnBase when the image's bottom layers are not the old base's.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

import dockerfile as _parser

from shared.domain.dockerfile import DockerfileError, parse_dependencies

BASE_NAME = "org.opencontainers.image.base.name"
BASE_DIGEST = "org.opencontainers.image.base.digest"
RUN_ID = "dev.basetrigger.run.id"
TRIGGER = "dev.basetrigger.trigger"
EVENT_IMAGE = "dev.basetrigger.base-event.image"
EVENT_DIGEST = "dev.basetrigger.base-event.digest"

# What final_stage_verdict found nothing against.
ADDS_ONLY = "adds only files and metadata"

# Instructions that only add files from the context, or metadata, to what the base holds.
_ADDS_ONLY = frozenset({"COPY", "ADD", "ENV", "LABEL", "EXPOSE", "USER", "WORKDIR", "ENTRYPOINT", "CMD",
                        "ARG", "STOPSIGNAL", "HEALTHCHECK", "MAINTAINER"})
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_REMOTE = re.compile(r"^(https?://|git@|ssh://|git://)", re.I)
_NUMERIC_OWNER = re.compile(r"^\d+(:\d+)?$")


class RebaseRefused(Exception):
    """This image cannot be rebased safely (str says why); it is rebuilt instead."""


@dataclass(frozen=True)
class RebasePlan:
    """What to rebase: `image`, the task's last image (name@digest), built on `old_base`
    (name@digest), onto `new_base` (name@digest, a manifest or an index), both versions of the
    task's base `base` (as the task names it). `prove_config`: refuse unless the base's
    configuration is unchanged besides its layers (the `auto` policy)."""

    base: str
    image: str
    old_base: str
    new_base: str
    prove_config: bool
    # The task's rebase check as argv words: run in the rebased image before any tag moves.
    check: tuple[str, ...] = ()


class NotOnBase(ValueError):
    """The image's bottom layers are not the old base's: swapping them would drop or keep the wrong
    files, so the image is rebuilt instead."""


def build_annotations(run_id: str, trigger: str, cause: str | None) -> dict[str, str]:
    """What triggered a build, as annotations: the run, the trigger and the base event (`image@digest`).
    The base's own name and digest (BASE_NAME, BASE_DIGEST) are added by the builder, which resolves them."""
    found = {RUN_ID: run_id, TRIGGER: trigger}
    if cause and "@" in cause:
        image, _, digest = cause.rpartition("@")
        found[EVENT_IMAGE], found[EVENT_DIGEST] = image, digest
    return found


def final_base(dockerfile_text: str, build_args: dict[str, str]) -> str | None:
    """The image the final stage is built FROM, or None when it starts from a stage or scratch."""
    try:
        deps = parse_dependencies(dockerfile_text, build_args)
    except DockerfileError:
        return None
    return deps.stages[-1].external_base if deps.stages else None


def final_stage_verdict(dockerfile_text: str, build_args: dict[str, str], changed: str) -> str | None:
    """Why the final stage's own layers may depend on the base's contents, or None when its
    instructions only add files or metadata (so its layers are the same on any base).

    `changed` is the base whose push triggered the run (a normalized reference)."""
    try:
        deps = parse_dependencies(dockerfile_text, build_args)
        commands = _parser.parse_string(dockerfile_text)
    except (DockerfileError, _parser.GoParseError):
        return "the Dockerfile cannot be read"
    final = deps.stages[-1]
    if final.external_base is None:
        return "the final stage does not start FROM an image"
    if final.external_base != changed:
        return f"the changed base {changed} is not the final stage's base"
    froms = [i for i, c in enumerate(commands) if (c.cmd or "").upper() == "FROM"]
    names = {s.alias: s for s in deps.stages if s.alias}
    for command in commands[froms[-1] + 1:]:
        word = (command.cmd or "").upper()
        if word not in _ADDS_ONLY:
            return f"{word} in final stage"
        flags = dict(f.lstrip("-").split("=", 1) for f in command.flags if "=" in f)
        if word in ("COPY", "ADD") and "from" in flags:
            source = flags["from"].lower()
            stage = names.get(source) or (deps.stages[int(source)] if source.isdigit()
                                          and int(source) < len(deps.stages) else None)
            if stage is None or _stage_uses(deps.stages, stage.index, changed):
                return f"{word} --from={flags['from']} reads the changed base"
        if word in ("COPY", "ADD") and "chown" in flags and not _NUMERIC_OWNER.match(flags["chown"]):
            return f"{word} --chown by name reads the base's /etc/passwd"
        if word == "ADD" and any(_REMOTE.match(v) for v in command.value[:-1]):
            return "ADD of a remote file in final stage"
    return None


def _stage_uses(stages: list[Any], index: int, image: str) -> bool:
    current = stages[index]
    while True:
        if current.external_base == image:
            return True
        if current.from_stage is None:
            return False
        current = stages[current.from_stage]


# The configuration a rebase keeps from the image: the base's part of it must not have changed.
_CONFIG_FIELDS = (("Env", "ENV"), ("Entrypoint", "ENTRYPOINT"), ("Cmd", "CMD"), ("User", "USER"),
                  ("WorkingDir", "WORKDIR"), ("Labels", "LABEL"), ("ExposedPorts", "EXPOSE"),
                  ("Volumes", "VOLUME"), ("StopSignal", "STOPSIGNAL"), ("Healthcheck", "HEALTHCHECK"))
_PLATFORM_FIELDS = ("os", "architecture", "variant", "os.version")


def config_verdict(old_config: dict[str, Any], new_config: dict[str, Any]) -> str | None:
    """Which part of the base's configuration changed besides its layers, or None."""
    old, new = old_config.get("config") or {}, new_config.get("config") or {}
    for key, word in _CONFIG_FIELDS:
        if (old.get(key) or None) != (new.get(key) or None):
            return f"base {word} changed"
    if any(old_config.get(key) != new_config.get(key) for key in _PLATFORM_FIELDS):
        return "base platform changed"
    return None


@dataclass(frozen=True)
class Rebased:
    manifest: dict[str, Any]
    config: dict[str, Any]


def layer_digests(manifest: dict[str, Any]) -> list[str]:
    return [str(layer.get("digest")) for layer in manifest.get("layers") or []]


def rebase_image(image_manifest: dict[str, Any], image_config: dict[str, Any],
                 old_base: tuple[dict[str, Any], dict[str, Any]],
                 new_base: tuple[dict[str, Any], dict[str, Any]],
                 annotations: dict[str, str]) -> Rebased:
    """The image's manifest and config with the old base's layers replaced by the new base's.

    `old_base` and `new_base` are (manifest, config). The config's diff_ids and history are
    rewritten the same way; everything else (the image's own env, entrypoint, labels...) is kept.
    The config's `config` section keeps the image's values: equal to the new base's where they
    came from the base, when the auto rule said so. NotOnBase when the bottom layers differ."""
    (old_manifest, old_config), (new_manifest, new_config) = old_base, new_base
    # The layers' identity is their uncompressed digest (diff_id): a push may compress a base
    # layer anew, which changes the manifest's digest of it but not what it holds.
    own = layer_digests(image_manifest)
    bottom = layer_digests(old_manifest)
    diff_ids = list((image_config.get("rootfs") or {}).get("diff_ids") or [])
    old_diff_ids = list((old_config.get("rootfs") or {}).get("diff_ids") or [])
    if diff_ids[:len(old_diff_ids)] != old_diff_ids or len(old_diff_ids) != len(bottom) \
            or len(diff_ids) != len(own):
        raise NotOnBase("the image's bottom layers are not the old base's")
    history = list(image_config.get("history") or [])
    old_history = list(old_config.get("history") or [])
    if len(history) < len(old_history):
        raise NotOnBase("the image's history is shorter than the old base's")

    config = copy.deepcopy(image_config)
    config["rootfs"] = {"type": "layers",
                        "diff_ids": list(new_config["rootfs"]["diff_ids"]) + diff_ids[len(old_diff_ids):]}
    config["history"] = list(new_config.get("history") or []) + history[len(old_history):]
    manifest = copy.deepcopy(image_manifest)
    manifest["layers"] = copy.deepcopy(new_manifest.get("layers") or []) + \
        copy.deepcopy((image_manifest.get("layers") or [])[len(bottom):])
    if manifest.get("mediaType", OCI_MANIFEST) == OCI_MANIFEST:  # Docker's schema 2 has no annotations
        manifest["annotations"] = {**(image_manifest.get("annotations") or {}), **annotations}
    return Rebased(manifest, config)


def decision_text(rebased: bool, why: str) -> str:
    return f"{'rebased' if rebased else 'rebuilt'}: {why}"
