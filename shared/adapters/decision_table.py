"""Decisions in Table Storage.

Table `decisions`, one partition `decision`, two kinds of rows:
- `d|<inverted timestamp>-<event id hash>`  the decision; newest first in one key-range read
- `e|<encoded event id>`                    the event's marker: a point read tells whether an event
                                            was already handled (redelivery), and points at its decision
- `p|<hash of image@digest>`                a push being dispatched (held by one delivery at a time,
                                            removed when it is decided)
Both rows of a decision are written in one transaction.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from shared.adapters.storage import Storage
from shared.domain.decisions import DISPATCH_STALE_AFTER, SCHEMA_VERSION, Decision, EventBusy, TaskDecision
from shared.domain.image_ref import encode_key
from shared.domain.vocabulary import EventSource, Outcome, utc_now

PARTITION = "decision"
_EPOCH_SPAN = 10**13  # milliseconds; inverted keys stay fixed-width until year 2286
# A property holds at most 32K characters.
_MAX_PROPERTY_CHARS = 30_000
# What one text field of a decision keeps: the decision log must store whatever it is given.
_MAX_TEXT_CHARS = 2_000


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_TEXT_CHARS else text[:_MAX_TEXT_CHARS] + "…"


def _fit(items: list[Any]) -> str:
    """JSON of the longest prefix of items that fits one Table property."""
    text = json.dumps(items)
    while len(text) > _MAX_PROPERTY_CHARS:
        items = items[: len(items) * _MAX_PROPERTY_CHARS // len(text)]
        text = json.dumps(items)
    return text


def _row_key(decision: Decision) -> str:
    millis = int(decision.time.timestamp() * 1000)
    digest = hashlib.sha256(decision.event_id.encode()).hexdigest()[:16]
    return f"d|{_EPOCH_SPAN - millis:013d}-{digest}"


def _push_key(push: str) -> str:
    # Hashed: an image reference and its digest together may not fit a key.
    return "p|" + hashlib.sha256(push.encode()).hexdigest()


def to_entity(decision: Decision) -> dict[str, Any]:
    # Big fan-outs keep the first details that fit; the per-outcome counts stay in the reason,
    # and every run records its own cause.
    return {
        "PartitionKey": PARTITION,
        "RowKey": _row_key(decision),
        "SchemaVersion": SCHEMA_VERSION,
        "EventId": _clip(decision.event_id),
        "Source": str(decision.source),
        "Outcome": str(decision.outcome),
        "Reason": _clip(decision.reason),
        "Image": _clip(decision.image or ""),
        "Digest": _clip(decision.digest or ""),
        "Runs": _fit(list(decision.runs)),
        "Tasks": _fit([t.to_dict() for t in decision.tasks]),
        "Time": decision.time.isoformat(),
        "Change": _clip(decision.change or ""),
    }


def from_entity(entity: Any) -> Decision:
    return Decision(
        event_id=entity["EventId"],
        source=EventSource(entity["Source"]),
        outcome=Outcome(entity["Outcome"]),
        reason=entity["Reason"],
        image=entity.get("Image") or None,
        digest=entity.get("Digest") or None,
        runs=json.loads(entity.get("Runs") or "[]"),
        tasks=[TaskDecision.from_dict(t) for t in json.loads(entity.get("Tasks") or "[]")],
        time=datetime.fromisoformat(entity["Time"]),
        change=entity.get("Change") or None,  # rows stored before it have none
    )


class TableDecisionLog:
    """The DecisionLog and the DispatchClaims ports on one table: a claim's marker row becomes its
    event's decided marker in the same transaction that stores the decision (`record`)."""

    def __init__(self, storage: Storage):
        self.storage = storage

    @property
    def table(self) -> TableClient:
        return self.storage.table("decisions")

    def seen(self, event_id: str) -> Decision | None:
        try:
            marker = self.table.get_entity(PARTITION, f"e|{encode_key(event_id)}")
            return from_entity(self.table.get_entity(PARTITION, marker["DecisionKey"]))
        except ResourceNotFoundError:
            return None

    def begin(self, event_id: str) -> Decision | None:
        """Claim the event for this delivery: its marker is created before anything is dispatched.

        None: this delivery dispatches the event. A Decision: the event was handled already.
        EventBusy: another delivery is dispatching it right now. A marker whose dispatcher went
        silent for DISPATCH_STALE_AFTER is taken over (etag-guarded), so a crash loses nothing.
        """
        key = f"e|{encode_key(event_id)}"
        while True:
            try:
                self.table.create_entity({"PartitionKey": PARTITION, "RowKey": key,
                                          "DispatchingSince": utc_now().isoformat()})
                return None
            except ResourceExistsError:
                pass
            try:
                marker = self.table.get_entity(PARTITION, key)
            except ResourceNotFoundError:
                continue  # removed in between: try to create it again
            if marker.get("DecisionKey"):
                try:
                    return from_entity(self.table.get_entity(PARTITION, marker["DecisionKey"]))
                except ResourceNotFoundError:
                    return None  # a decision lost with its row: decide again
            since = datetime.fromisoformat(marker.get("DispatchingSince") or "1970-01-01T00:00:00+00:00")
            if utc_now() - since < DISPATCH_STALE_AFTER:
                raise EventBusy(f"event {event_id} is being dispatched by another delivery")
            try:
                self.table.update_entity(
                    {"PartitionKey": PARTITION, "RowKey": key, "DispatchingSince": utc_now().isoformat()},
                    mode=UpdateMode.MERGE, etag=marker.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified)
                return None
            except (ResourceModifiedError, ResourceNotFoundError) as exc:
                raise EventBusy(f"event {event_id} was taken over by another delivery") from exc

    def abandon(self, event_id: str) -> None:
        """This delivery could not dispatch the event: let the next one claim it at once."""
        key = f"e|{encode_key(event_id)}"
        try:
            marker = self.table.get_entity(PARTITION, key)
            if not marker.get("DecisionKey"):
                self.table.delete_entity(PARTITION, key, etag=marker.metadata["etag"],
                                         match_condition=MatchConditions.IfNotModified)
        except (ResourceNotFoundError, ResourceModifiedError):
            pass

    def hold_push(self, push: str) -> str:
        key = _push_key(push)
        try:
            return str(self.table.create_entity({"PartitionKey": PARTITION, "RowKey": key,
                                                 "Since": utc_now().isoformat()})["etag"])
        except ResourceExistsError:
            pass
        try:
            held = self.table.get_entity(PARTITION, key)
        except ResourceNotFoundError as exc:  # let go of in between: the next try takes it
            raise EventBusy(f"push {push} was being dispatched by another delivery") from exc
        if utc_now() - datetime.fromisoformat(held["Since"]) < DISPATCH_STALE_AFTER:
            raise EventBusy(f"push {push} is being dispatched by another delivery")
        try:  # its holder went silent: take the hold over
            return str(self.table.update_entity(
                {"PartitionKey": PARTITION, "RowKey": key, "Since": utc_now().isoformat()},
                mode=UpdateMode.REPLACE, etag=held.metadata["etag"],
                match_condition=MatchConditions.IfNotModified)["etag"])
        except (ResourceModifiedError, ResourceNotFoundError) as exc:
            raise EventBusy(f"push {push} was taken over by another delivery") from exc

    def release_push(self, push: str, token: str) -> None:
        try:
            self.table.delete_entity(PARTITION, _push_key(push), etag=token,
                                     match_condition=MatchConditions.IfNotModified)
        except (ResourceNotFoundError, ResourceModifiedError):
            pass  # gone already, or taken over: the hold is no longer this delivery's

    def record(self, decision: Decision, mark_seen: bool = True) -> None:
        """Store the decision and (unless told not to) mark its event as handled."""
        row = to_entity(decision)
        if not mark_seen:
            self.table.upsert_entity(row)
            return
        marker = {"PartitionKey": PARTITION, "RowKey": f"e|{encode_key(decision.event_id)}",
                  "DecisionKey": row["RowKey"]}
        self.table.submit_transaction([("upsert", row), ("upsert", marker, {"mode": UpdateMode.MERGE})])

    def recent(self, top: int = 20, image: str | None = None) -> list[Decision]:
        query = "PartitionKey eq @pk and RowKey ge 'd|' and RowKey lt 'd}'"
        params: dict[str, Any] = {"pk": PARTITION}
        if image:
            query += " and Image eq @image"
            params["image"] = image
        result = []
        for entity in self.table.query_entities(query, parameters=params, results_per_page=top):
            result.append(from_entity(entity))
            if len(result) == top:
                break
        return result
