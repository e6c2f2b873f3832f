"""Receive: every arrival from a registry, whoever sent it, on its way to a decision.

The webhooks and Event Grid (parsed in shared/adapters/ingress/), the poller and `base rebuild` all
hand their arrivals (shared.domain.events.Arrival) to `Ingest.receive`:
- a `Rejected` payload is recorded as a `rejected` decision (never dispatched);
- a `TagPushed` (Docker Hub's webhook names no digest) has its digest read from the registry first;
- an `ImagePushed` whose digest is a manifest list or an OCI index has its platforms read (one GET
  by digest): a task building one platform has recorded its platform's manifest digest
  (shared.domain.platforms), so the event carries each platform's digest;
- a push from `base rebuild` rebuilds everything built FROM the image, whatever its digest;
- everything else goes to the dispatcher as it is.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import replace

from shared.domain.decisions import Decision, EventBusy
from shared.domain.events import Arrival, Ignored, ImagePushed, Rejected, TagPushed, check_digest
from shared.domain.image_ref import ImageRef
from shared.domain.manifests import RegistryError
from shared.domain.platforms import INDEX_MEDIA_TYPES
from shared.domain.vocabulary import EventSource, Outcome, utc_now
from shared.service_layer.dispatch import Dispatcher, DispatchIncomplete
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

    def receive(self, arrivals: Sequence[Arrival]) -> list[Decision]:
        """The decision on each arrival of a batch (a webhook envelope); the others go on when one
        fails, then DispatchIncomplete asks the sender to deliver again (the arrivals handled
        already are recognised by their ids when the batch comes again)."""
        decisions: list[Decision] = []
        failures: list[Exception] = []
        for arrival in arrivals:
            try:
                decisions.append(self._decide(arrival))
            except Exception as exc:
                log.exception("dispatch of event %s failed", arrival.event_id)
                failures.append(exc)
        if failures:
            first = failures[0]
            # EventBusy's message is ours (which push is busy); any other only by its kind, as
            # storage errors may quote what they were sent.
            why = str(first) if isinstance(first, EventBusy) else first.__class__.__name__
            raise DispatchIncomplete(f"{len(failures)} event(s) could not be dispatched ({why}); "
                                     "deliver again") from first
        return decisions

    def _decide(self, arrival: Arrival) -> Decision:
        if isinstance(arrival, Rejected):
            return self.dispatcher.reject(arrival.event_id, arrival.source, arrival.reason)
        if isinstance(arrival, TagPushed):
            return self._tag_pushed(arrival)
        if isinstance(arrival, ImagePushed) and arrival.source == EventSource.REBUILD:
            return self.dispatcher.rebuild(arrival)
        return self.dispatcher.handle(self.with_platforms(arrival))

    def with_platforms(self, event: ImagePushed | Ignored) -> ImagePushed | Ignored:
        # The poller read the index already where a task builds one platform (polling._probe).
        if not isinstance(event, ImagePushed) or event.source == EventSource.POLL or event.platforms \
                or event.media_type not in INDEX_MEDIA_TYPES:
            return event
        name = ImageRef.parse(event.reference).name
        try:
            info = self.registry.inspect(f"{name}@{event.digest}", with_platforms=True)
        except RegistryError as exc:
            # Compared with the index digest, a task may rebuild once more than needed; never less.
            log.warning("platforms of %s@%s unknown: %s", name, event.digest, exc)
            return event
        return replace(event, platforms=tuple(sorted(info.platforms.items())))

    def _tag_pushed(self, push: TagPushed) -> Decision:
        """A push without a digest: the digest the tag points at now, then the usual dispatch."""
        previous = self.decisions.seen(push.event_id)
        if previous is not None:
            return previous
        try:
            info = self.registry.inspect(push.reference, with_platforms=True)
        except RegistryError as exc:
            decision = Decision(push.event_id, push.source, Outcome.REGISTRY_ERROR,
                                f"a push of {push.reference} was notified, but its digest cannot be "
                                f"read: {exc}; the poller checks it again", image=push.reference)
            self.decisions.record(decision, mark_seen=False)
            return decision
        return self.dispatcher.handle(push.with_digest(info.digest, info.media_type,
                                                       tuple(sorted(info.platforms.items()))))

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
        (decision,) = self.receive([event])  # source `rebuild`: everything built FROM it
        return decision
