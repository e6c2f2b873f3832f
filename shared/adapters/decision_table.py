"""Decisions in Table Storage.

Table `decisions`, one partition `decision`, two kinds of rows:
- `d|<inverted timestamp>-<event id hash>`  the decision; newest first in one key-range read
- `e|<encoded event id>`                    the event's marker: a point read tells whether an event
                                            was already handled (redelivery), and points at its decision
Both rows of a decision are written in one transaction.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient, TableTransactionError

from shared.adapters.storage import Storage
from shared.domain.decisions import SCHEMA_VERSION, Decision, TaskDecision
from shared.domain.image_ref import encode_key
from shared.domain.vocabulary import EventSource, Outcome

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
    )


class TableDecisionLog:
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

    def record(self, decision: Decision, mark_seen: bool = True) -> None:
        """Store the decision and (unless told not to) mark its event as handled."""
        row = to_entity(decision)
        if not mark_seen:
            self.table.upsert_entity(row)
            return
        marker = {"PartitionKey": PARTITION, "RowKey": f"e|{encode_key(decision.event_id)}",
                  "DecisionKey": row["RowKey"]}
        try:
            self.table.submit_transaction([("upsert", row), ("create", marker)])
        except TableTransactionError as exc:
            if getattr(exc, "error_code", None) != "EntityAlreadyExists":
                raise
            # A concurrent duplicate finished first: keep this decision visible too.
            self.table.upsert_entity(row)

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
