"""Pushes from every webhook on their way to the dispatcher: a manifest list's platforms are read first.

`base rebuild` comes in here too (`rebuild`): a push of the image as it is now, asked for by hand.

A push event names the digest that was pushed. When that is a manifest list or an OCI index, a task
building one platform has recorded its platform's manifest digest (shared.domain.platforms), so the
index is read once here (a GET by digest) and the event carries each platform's digest. Docker Hub's
webhook names no digest at all: it is read from the registry here too.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace

from shared.domain.decisions import Decision
from shared.domain.events import Ignored, ImagePushed, check_digest
from shared.domain.image_ref import ImageRef
from shared.domain.manifests import RegistryError
from shared.domain.platforms import INDEX_MEDIA_TYPES
from shared.domain.vocabulary import EventSource, Outcome, utc_now
from shared.domain.webhook_events import DockerHubPush
from shared.service_layer.dispatch import Dispatcher
from shared.service_layer.ports import DecisionLog, Registry

log = logging.getLogger(__name__)

# The digest a rebuild is recorded with when the registry cannot say what the tag points at: a
# rebuild compares no digests (dispatch's rules 4-5 are skipped), but its event, its push hold and
# its decision need one.
UNRESOLVED_DIGEST = "sha256:" + "0" * 64


class Ingest:
    def __init__(self, registry: Registry, dispatcher: Dispatcher, decisions: DecisionLog):
        self.registry = registry
        self.dispatcher = dispatcher
        self.decisions = decisions

    def with_platforms(self, event: ImagePushed | Ignored) -> ImagePushed | Ignored:
        if not isinstance(event, ImagePushed) or event.platforms or event.media_type not in INDEX_MEDIA_TYPES:
            return event
        name = ImageRef.parse(event.reference).name
        try:
            info = self.registry.inspect(f"{name}@{event.digest}", with_platforms=True)
        except RegistryError as exc:
            # Compared with the index digest, a task may rebuild once more than needed; never less.
            log.warning("platforms of %s@%s unknown: %s", name, event.digest, exc)
            return event
        return replace(event, platforms=tuple(sorted(info.platforms.items())))

    def handle_all(self, events: list[ImagePushed | Ignored]) -> list[Decision]:
        return self.dispatcher.handle_all([self.with_platforms(e) for e in events])

    def dockerhub(self, push: DockerHubPush) -> Decision:
        """Docker Hub's push: the digest the tag points at now, then the usual dispatch."""
        previous = self.decisions.seen(push.event_id)
        if previous is not None:
            return previous
        try:
            info = self.registry.inspect(push.reference, with_platforms=True)
        except RegistryError as exc:
            decision = Decision(push.event_id, EventSource.DOCKERHUB, Outcome.REGISTRY_ERROR,
                                f"Docker Hub notified a push of {push.reference}, but its digest cannot be "
                                f"read: {exc}; the poller checks it again", image=push.reference)
            self.decisions.record(decision, mark_seen=False)
            return decision
        event = push.with_digest(info.digest)
        return self.dispatcher.handle(replace(event, platforms=tuple(sorted(info.platforms.items())),
                                              media_type=info.media_type))

    def rebuild(self, image: str, digest: str | None = None) -> Decision:
        """`base rebuild`: a wave of everything built FROM `image`, whatever digests they built on.
        `digest` (or the image's own `@digest`) is recorded; else the one its tag points at now.
        InvalidReference or MalformedEvent for an image or digest that is none."""
        ref = ImageRef.parse(image)
        given = digest or ref.digest
        tag = ref.tag or "latest"
        if given:
            found = check_digest(given)
        else:  # for the record only: the rebuild needs none
            found = self.registry.resolve_digest(f"{ref.name}:{tag}") or UNRESOLVED_DIGEST
        event = ImagePushed(f"rebuild-{uuid.uuid4()}", ref.registry, ref.repository, tag, found, utc_now(),
                            EventSource.REBUILD)
        return self.dispatcher.rebuild(event)
