"""Decisions: what basetrigger did with each event, and why ("why did / didn't it rebuild?").

Table `decisions`, one partition `decision`, two kinds of rows:
- `d|<inverted timestamp>-<event id hash>`  the decision; newest first in one key-range read
- `e|<encoded event id>`                    the event's marker: a point read tells whether an event
                                            was already handled (redelivery), and points at its decision
Both rows of a decision are written in one transaction.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient, TableTransactionError

from shared.image_ref import encode_key
from shared.storage import Storage

# Outcomes, per event and per task.
QUEUED = "queued"
NO_DEPENDENTS = "no-dependents"
DIGEST_UNCHANGED = "digest-unchanged"
ALREADY_TRIGGERED = "already-triggered"
COALESCED = "coalesced"
TRIGGER_DISABLED = "trigger-disabled"
NOT_RUNTIME = "not-a-runtime-dependency"
IGNORED = "ignored"
REJECTED = "rejected"
OWN_OUTPUT = "own-output"

PARTITION = "decision"
_EPOCH_SPAN = 10**13  # milliseconds; inverted keys stay fixed-width until year 2286


@dataclass
class TaskDecision:
    task: str
    outcome: str
    reason: str
    run_id: str | None = None


@dataclass
class Decision:
    event_id: str
    source: str
    outcome: str
    reason: str
    image: str | None = None
    digest: str | None = None
    runs: list[str] = field(default_factory=list)
    tasks: list[TaskDecision] = field(default_factory=list)
    time: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["time"] = self.time.isoformat().replace("+00:00", "Z")
        return data

    @classmethod
    def from_entity(cls, entity: Any) -> Decision:
        return cls(
            event_id=entity["EventId"],
            source=entity["Source"],
            outcome=entity["Outcome"],
            reason=entity["Reason"],
            image=entity.get("Image") or None,
            digest=entity.get("Digest") or None,
            runs=json.loads(entity.get("Runs") or "[]"),
            tasks=[TaskDecision(**t) for t in json.loads(entity.get("Tasks") or "[]")],
            time=datetime.fromisoformat(entity["Time"]),
        )


_MAX_PROPERTY_CHARS = 30_000


def _fit(items: list) -> str:
    """JSON of the longest prefix of items that fits one Table property."""
    text = json.dumps(items)
    while len(text) > _MAX_PROPERTY_CHARS:
        items = items[: len(items) * _MAX_PROPERTY_CHARS // len(text)]
        text = json.dumps(items)
    return text


class DecisionLog:
    def __init__(self, storage: Storage):
        self.storage = storage

    @property
    def decisions(self) -> TableClient:
        return self.storage.table("decisions")

    @staticmethod
    def _row_key(decision: Decision) -> str:
        millis = int(decision.time.timestamp() * 1000)
        digest = hashlib.sha256(decision.event_id.encode()).hexdigest()[:16]
        return f"d|{_EPOCH_SPAN - millis:013d}-{digest}"

    def seen(self, event_id: str) -> Decision | None:
        try:
            marker = self.decisions.get_entity(PARTITION, f"e|{encode_key(event_id)}")
        except ResourceNotFoundError:
            return None
        try:
            return Decision.from_entity(self.decisions.get_entity(PARTITION, marker["DecisionKey"]))
        except ResourceNotFoundError:
            return None

    def record(self, decision: Decision, mark_seen: bool = True) -> None:
        """Store the decision and mark its event as handled."""
        key = self._row_key(decision)
        # A property holds at most 32K characters: big fan-outs keep the first details that fit;
        # the per-outcome counts stay in the reason, and every run records its own cause.
        tasks = _fit([asdict(t) for t in decision.tasks])
        runs = _fit(decision.runs)
        row = {
            "PartitionKey": PARTITION,
            "RowKey": key,
            "EventId": decision.event_id,
            "Source": decision.source,
            "Outcome": decision.outcome,
            "Reason": decision.reason,
            "Image": decision.image or "",
            "Digest": decision.digest or "",
            "Runs": runs,
            "Tasks": tasks,
            "Time": decision.time.isoformat(),
        }
        if not mark_seen:
            self.decisions.upsert_entity(row)
            return
        marker = {"PartitionKey": PARTITION, "RowKey": f"e|{encode_key(decision.event_id)}",
                  "DecisionKey": key}
        try:
            self.decisions.submit_transaction([("upsert", row), ("create", marker)])
        except TableTransactionError as exc:
            if exc.error_code != "EntityAlreadyExists":
                raise
            # A concurrent duplicate finished first: keep this decision visible too.
            self.decisions.upsert_entity(row)

    def recent(self, top: int = 20, image: str | None = None) -> list[Decision]:
        query = "PartitionKey eq @pk and RowKey ge 'd|' and RowKey lt 'd}'"
        params: dict[str, Any] = {"pk": PARTITION}
        if image:
            query += " and Image eq @image"
            params["image"] = image
        result = []
        for entity in self.decisions.query_entities(query, parameters=params, results_per_page=top):
            result.append(Decision.from_entity(entity))
            if len(result) == top:
                break
        return result
