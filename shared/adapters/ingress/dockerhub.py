"""Docker Hub's repository webhooks: `push_data.tag` and `repository.repo_name`, and no digest. The
payload becomes a `TagPushed`; the service layer reads the digest from the registry before dispatch."""

from __future__ import annotations

from typing import Any

from shared.adapters.ingress.fields import (
    MAX_REPOSITORY,
    MAX_TAG,
    check_text,
    derived_id,
    json_object,
    unix_time,
)
from shared.domain.credentials import DOCKER_HUB
from shared.domain.events import MalformedEvent, Rejected, TagPushed
from shared.domain.image_ref import ImageRef, InvalidReference, fits_a_key
from shared.domain.vocabulary import EventSource

# The id a rejected payload is recorded under: Docker Hub's payload has no id of its own.
PAYLOAD_ID = "(dockerhub payload)"


def from_dockerhub(body: Any) -> TagPushed | Rejected:
    try:
        return _read(body)
    except MalformedEvent as exc:
        return Rejected(PAYLOAD_ID, str(exc), EventSource.DOCKERHUB)


def _read(body: Any) -> TagPushed:
    payload = json_object(body, "the body")
    push = json_object(payload.get("push_data"), "push_data")
    repository = json_object(payload.get("repository"), "repository")
    name = repository.get("repo_name")
    tag = push.get("tag")
    if not isinstance(name, str) or not name:
        raise MalformedEvent("repository.repo_name is missing")
    if not isinstance(tag, str) or not tag:
        raise MalformedEvent("push_data.tag is missing")
    check_text(name, "repository.repo_name", MAX_REPOSITORY)
    check_text(tag, "push_data.tag", MAX_TAG)
    try:
        # `node` is docker.io/library/node, as a Dockerfile's FROM reads it.
        reference = str(ImageRef.parse(f"{DOCKER_HUB}/{name}:{tag}"))
    except InvalidReference as exc:
        raise MalformedEvent(f"the pushed image is not a valid reference: {exc}") from exc
    if not fits_a_key(reference):  # as ImagePushed.reference requires, before any registry is asked
        raise MalformedEvent("the pushed image is too long for a table key once escaped")
    pushed_at = push.get("pushed_at")
    event_id = derived_id("dockerhub", reference, str(pushed_at))
    return TagPushed(event_id, reference, unix_time(pushed_at), EventSource.DOCKERHUB)
