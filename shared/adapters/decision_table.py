"""Decisions in Table Storage.

Schema 2: table `decisions`, spread over partitions so that the writes of many events at once
spread, and every read is one partition (or one key range of a few, in key order):
- PartitionKey `event|NN` (NN = one of 32 buckets, from a hash of the event id):
  - `e|<encoded event id>`   the event's marker: a point read tells whether an event was already
                             handled (redelivery), and points at its decision;
  - `d|<inverted ms>-<hash of the event id>`  the decision; it and its marker are written in one
                             transaction (so a handled event always has its decision).
- PartitionKey `time|<inverted hour>`, RowKey `d|<inverted ms>-<hash>`: a copy of every decision,
  the newest-first list: one key-range read across the hours in key order, newest hour first.
- PartitionKey `image|NN` (from a hash of the encoded image), RowKey `<image>|d|<inverted ms>-<hash>`:
  a copy per decision about an image, "decisions about image X" in one key-range read.
- PartitionKey `push|NN` (from the push's hash), RowKey `p|<hash of image@digest>`: a push being
  dispatched (held by one delivery at a time, removed when it is decided).
The copies are written after the transaction (they are in other partitions). A crash in between
leaves a handled event whose decision is not listed yet: its delivery fails, and the redelivery,
which finds the event handled, writes the copies again (a decision never changes: copies are upserts).
Schema 1 kept every row in the one partition `decision`: an event handled then still answers (a
marker read moves it and its decision), lists merge that partition in until `basetrigger admin
migrate` (`migrate_legacy`) has moved every row.
"""

from __future__ import annotations

import hashlib
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, TableTransactionError, UpdateMode

from shared.adapters.storage import MAX_BATCH, Storage, partition_is_empty
from shared.domain.decisions import DISPATCH_STALE_AFTER, SCHEMA_VERSION, Decision, EventBusy, TaskDecision
from shared.domain.image_ref import encode_key
from shared.domain.vocabulary import EventSource, Outcome, utc_now

log = logging.getLogger(__name__)

LEGACY = "decision"  # schema 1: every row in this one partition
BUCKETS = 32
_EPOCH_SPAN = 10**13  # milliseconds; inverted keys stay fixed-width until year 2286
_HOUR_SPAN = 10**8  # hours; the same
_MILLIS_PER_HOUR = 3_600_000
# A property holds at most 32K characters.
_MAX_PROPERTY_CHARS = 30_000
# What one text field of a decision keeps: the decision log must store whatever it is given.
_MAX_TEXT_CHARS = 2_000


def _bucket(text: str) -> str:
    return f"{int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % BUCKETS:02d}"


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_TEXT_CHARS else text[:_MAX_TEXT_CHARS] + "…"


def _fit(items: list[Any]) -> str:
    """JSON of the longest prefix of items that fits one Table property."""
    text = json.dumps(items)
    while len(text) > _MAX_PROPERTY_CHARS:
        items = items[: len(items) * _MAX_PROPERTY_CHARS // len(text)]
        text = json.dumps(items)
    return text


def _millis(decision: Decision) -> int:
    return int(decision.time.timestamp() * 1000)


def _row_key(decision: Decision) -> str:
    """`d|<inverted ms>-<hash>`: the decision's key in every partition it is in (newest first)."""
    digest = hashlib.sha256(decision.event_id.encode()).hexdigest()[:16]
    return f"d|{_EPOCH_SPAN - _millis(decision):013d}-{digest}"


def _event_partition(event_id: str) -> str:
    return f"event|{_bucket(event_id)}"


def _marker_key(event_id: str) -> str:
    return f"e|{encode_key(event_id)}"


def _time_partition(decision: Decision) -> str:
    return f"time|{_HOUR_SPAN - _millis(decision) // _MILLIS_PER_HOUR:08d}"


def _image_prefix(image: str) -> tuple[str, str] | None:
    """(partition, RowKey prefix) of the decisions about `image`; None for a reference too long
    to be a key (never listed by image)."""
    try:
        encoded = encode_key(image)
    except ValueError:
        return None
    return f"image|{_bucket(encoded)}", f"{encoded}|"


def _push_key(push: str) -> tuple[str, str]:
    # Hashed: an image reference and its digest together may not fit a key.
    digest = hashlib.sha256(push.encode()).hexdigest()
    return f"push|{_bucket(digest)}", "p|" + digest


def to_entity(decision: Decision) -> dict[str, Any]:
    """The decision's row in its event's partition; its copies differ only in their keys."""
    # Big fan-outs keep the first details that fit; the per-outcome counts stay in the reason,
    # and every run records its own cause.
    return {
        "PartitionKey": _event_partition(decision.event_id),
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


def _copies(decision: Decision, row: dict[str, Any]) -> list[dict[str, Any]]:
    """The list copies of a decision's row: one in its hour, one under its image."""
    key = _row_key(decision)
    copies = [dict(row, PartitionKey=_time_partition(decision), RowKey=key)]
    image = _image_prefix(decision.image) if decision.image else None
    if image:
        copies.append(dict(row, PartitionKey=image[0], RowKey=image[1] + key))
    return copies


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


def _decision_key(entity: Any) -> str:
    """`d|<inverted ms>-<hash>` of a listed row, whichever partition it came from."""
    row_key = str(entity["RowKey"])
    return row_key[row_key.rindex("d|"):]


@dataclass
class MigrationReport:
    """What `migrate_legacy` moved (decisions, event markers) and removed (stale push holds)."""

    decisions: int = 0
    markers: int = 0
    holds: int = 0  # pushes held by a delivery that went silent

    def to_dict(self) -> dict[str, int]:
        return {"decisions": self.decisions, "markers": self.markers, "holds": self.holds}


class TableDecisionLog:
    """The DecisionLog and the DispatchClaims ports on one table: a claim's marker row becomes its
    event's decided marker in the same transaction that stores the decision (`record`)."""

    def __init__(self, storage: Storage):
        self.storage = storage
        # A decision's two copies are written side by side.
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="decision-copies")
        # Once the schema-1 partition is seen empty it stays so (nothing writes it any more): reads
        # stop looking at it.
        self._legacy_gone = False

    @property
    def table(self) -> TableClient:
        return self.storage.table("decisions")

    def seen(self, event_id: str) -> Decision | None:
        partition, key = _event_partition(event_id), _marker_key(event_id)
        for _ in range(2):
            try:
                marker = self.table.get_entity(partition, key)
            except ResourceNotFoundError:
                if self._adopt_legacy(event_id):
                    continue  # handled before the upgrade: moved, read it again
                return None
            if not marker.get("DecisionKey"):
                return None  # being dispatched
            try:
                return from_entity(self.table.get_entity(partition, marker["DecisionKey"]))
            except ResourceNotFoundError:
                return None
        return None

    def begin(self, event_id: str) -> Decision | None:
        """Claim the event for this delivery: its marker is created before anything is dispatched.

        None: this delivery dispatches the event. A Decision: the event was handled already.
        EventBusy: another delivery is dispatching it right now. A marker whose dispatcher went
        silent for DISPATCH_STALE_AFTER is taken over (etag-guarded), so a crash loses nothing.
        """
        partition, key = _event_partition(event_id), _marker_key(event_id)
        self._adopt_legacy(event_id)
        while True:
            try:
                self.table.create_entity({"PartitionKey": partition, "RowKey": key,
                                          "DispatchingSince": utc_now().isoformat()})
                return None
            except ResourceExistsError:
                pass
            try:
                marker = self.table.get_entity(partition, key)
            except ResourceNotFoundError:
                continue  # removed in between: try to create it again
            if marker.get("DecisionKey"):
                try:
                    row = self.table.get_entity(partition, marker["DecisionKey"])
                except ResourceNotFoundError:
                    return None  # a decision lost with its row: decide again
                decision = from_entity(row)
                # A redelivery: the one before may have stopped between the decision and its copies.
                self._write_copies(decision, dict(row))
                return decision
            since = datetime.fromisoformat(marker.get("DispatchingSince") or "1970-01-01T00:00:00+00:00")
            if utc_now() - since < DISPATCH_STALE_AFTER:
                raise EventBusy(f"event {event_id} is being dispatched by another delivery")
            try:
                self.table.update_entity(
                    {"PartitionKey": partition, "RowKey": key, "DispatchingSince": utc_now().isoformat()},
                    mode=UpdateMode.MERGE, etag=marker.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified)
                return None
            except (ResourceModifiedError, ResourceNotFoundError) as exc:
                raise EventBusy(f"event {event_id} was taken over by another delivery") from exc

    def abandon(self, event_id: str) -> None:
        """This delivery could not dispatch the event: let the next one claim it at once."""
        partition, key = _event_partition(event_id), _marker_key(event_id)
        try:
            marker = self.table.get_entity(partition, key)
            if not marker.get("DecisionKey"):
                self.table.delete_entity(partition, key, etag=marker.metadata["etag"],
                                         match_condition=MatchConditions.IfNotModified)
        except (ResourceNotFoundError, ResourceModifiedError):
            pass

    def hold_push(self, push: str) -> str:
        partition, key = _push_key(push)
        try:
            return str(self.table.create_entity({"PartitionKey": partition, "RowKey": key,
                                                 "Since": utc_now().isoformat()})["etag"])
        except ResourceExistsError:
            pass
        try:
            held = self.table.get_entity(partition, key)
        except ResourceNotFoundError as exc:  # let go of in between: the next try takes it
            raise EventBusy(f"push {push} was being dispatched by another delivery") from exc
        if utc_now() - datetime.fromisoformat(held["Since"]) < DISPATCH_STALE_AFTER:
            raise EventBusy(f"push {push} is being dispatched by another delivery")
        try:  # its holder went silent: take the hold over
            return str(self.table.update_entity(
                {"PartitionKey": partition, "RowKey": key, "Since": utc_now().isoformat()},
                mode=UpdateMode.REPLACE, etag=held.metadata["etag"],
                match_condition=MatchConditions.IfNotModified)["etag"])
        except (ResourceModifiedError, ResourceNotFoundError) as exc:
            raise EventBusy(f"push {push} was taken over by another delivery") from exc

    def release_push(self, push: str, token: str) -> None:
        partition, key = _push_key(push)
        try:
            self.table.delete_entity(partition, key, etag=token,
                                     match_condition=MatchConditions.IfNotModified)
        except (ResourceNotFoundError, ResourceModifiedError):
            pass  # gone already, or taken over: the hold is no longer this delivery's

    def record(self, decision: Decision, mark_seen: bool = True) -> None:
        """Store the decision and (unless told not to) mark its event as handled: both in one
        transaction of the event's partition, then the list copies."""
        row = to_entity(decision)
        if mark_seen:
            marker = {"PartitionKey": row["PartitionKey"], "RowKey": _marker_key(decision.event_id),
                      "DecisionKey": row["RowKey"]}
            self.table.submit_transaction([("upsert", row), ("upsert", marker, {"mode": UpdateMode.MERGE})])
        # Without a marker nothing reads the event's partition for it: the copies are the decision.
        self._write_copies(decision, row)

    def _write_copies(self, decision: Decision, row: dict[str, Any]) -> None:
        list(self._pool.map(lambda copy: self.table.upsert_entity(copy, mode=UpdateMode.REPLACE),
                            _copies(decision, row)))

    def recent(self, top: int = 20, image: str | None = None) -> list[Decision]:
        """Newest first: one key-range read (the hours in key order, or one image's rows in its
        bucket), merged with what schema-1 rows are left."""
        if image:
            where = _image_prefix(image)
            if where is None:
                return []
            partition, prefix = where
            query = "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi"
            params: dict[str, Any] = {"pk": partition, "lo": prefix, "hi": prefix[:-1] + "}"}
        else:
            query = "PartitionKey ge @lo and PartitionKey lt @hi"
            params = {"lo": "time|", "hi": "time}"}
        found = self._first(query, params, top)
        if not self._no_legacy():
            legacy_query = "PartitionKey eq @pk and RowKey ge 'd|' and RowKey lt 'd}'"
            legacy_params: dict[str, Any] = {"pk": LEGACY}
            if image:
                legacy_query += " and Image eq @image"
                legacy_params["image"] = image
            merged = {_decision_key(e): e for e in self._first(legacy_query, legacy_params, top)}
            merged.update({_decision_key(e): e for e in found})  # moved already: the copy
            found = [merged[key] for key in sorted(merged)[:top]]
        return [from_entity(e) for e in found]

    def _first(self, query: str, params: dict[str, Any], top: int) -> list[Any]:
        result = []
        for entity in self.table.query_entities(query, parameters=params, results_per_page=top):
            result.append(entity)
            if len(result) == top:
                break
        return result

    # ---- schema 1 ----------------------------------------------------------------------------
    def _no_legacy(self) -> bool:
        if not self._legacy_gone:
            self._legacy_gone = partition_is_empty(self.table, LEGACY)
        return self._legacy_gone

    def _adopt_legacy(self, event_id: str) -> bool:
        """Move a schema-1 marker of this event (and its decision) into today's layout, so an
        event handled before the upgrade is still known as handled. False when there is none."""
        if self._no_legacy():
            return False
        try:
            marker = self.table.get_entity(LEGACY, _marker_key(event_id))
        except ResourceNotFoundError:
            return False
        self._move_marker(marker, MigrationReport())
        return True

    def _move_marker(self, marker: Any, report: MigrationReport) -> None:
        """Move a schema-1 marker (with the decision it points at, if that is still there)."""
        if marker.get("DecisionKey"):
            try:
                self._move_decision(self.table.get_entity(LEGACY, marker["DecisionKey"]), report)
                return
            except ResourceNotFoundError:
                pass  # its decision was lost, or moved with it a moment ago: the marker alone
        kept = {k: v for k, v in marker.items() if k not in ("PartitionKey", "RowKey")}
        # encode_key turned each unsafe character (and `%`) into %XX, which unquote turns back.
        event_id = unquote(str(marker["RowKey"])[2:])
        try:  # created only if absent: a marker written since (the event decided again) stays
            self.table.create_entity({"PartitionKey": _event_partition(event_id), "RowKey": marker["RowKey"],
                                      **kept})
        except ResourceExistsError:
            pass
        report.markers += self._delete_legacy(marker["RowKey"])

    def _move_decision(self, entity: Any, report: MigrationReport) -> None:
        """Move a schema-1 decision, with its marker if the marker points at it, into the event's
        partition (one transaction, as `record` writes them), write its copies, then remove the
        old rows: the decision's last, so an interrupted move is found and done again."""
        decision = from_entity(entity)
        row = dict(entity, PartitionKey=_event_partition(decision.event_id))
        try:
            marker = self.table.get_entity(LEGACY, _marker_key(decision.event_id))
        except (ResourceNotFoundError, ValueError):
            marker = None
        if marker is not None and marker.get("DecisionKey") == entity["RowKey"]:
            moved = {"PartitionKey": row["PartitionKey"], "RowKey": marker["RowKey"],
                     "DecisionKey": entity["RowKey"]}
            try:  # the marker only if absent: one written since is newer
                self.table.submit_transaction([("upsert", row), ("create", moved)])
            except TableTransactionError:
                pass
            report.markers += self._delete_legacy(marker["RowKey"])
        self._write_copies(decision, row)
        report.decisions += self._delete_legacy(entity["RowKey"])

    def _delete_legacy(self, row_key: str) -> int:
        """1 when this call removed the schema-1 row, 0 when it was gone already (a transaction of
        one: `delete_entity` answers a missing row as removed)."""
        try:
            self.table.submit_transaction([("delete", {"PartitionKey": LEGACY, "RowKey": row_key})])
        except TableTransactionError:
            return 0
        return 1

    def migrate_legacy(self) -> MigrationReport:
        """`basetrigger admin migrate`: move every schema-1 row into today's layout (idempotent; run
        it again after a failure). A push hold a running delivery still has is left (it is gone
        within DISPATCH_STALE_AFTER: run it again then)."""
        report = MigrationReport()
        rows = self.table.query_entities("PartitionKey eq @pk", parameters={"pk": LEGACY},
                                         results_per_page=MAX_BATCH)
        for entity in rows:
            kind = str(entity["RowKey"])[:2]
            if kind == "d|":
                self._move_decision(entity, report)
            elif kind == "e|":
                self._move_marker(entity, report)
            elif kind == "p|" and utc_now() - datetime.fromisoformat(entity["Since"]) >= DISPATCH_STALE_AFTER:
                report.holds += self._delete_legacy(entity["RowKey"])
        if report.decisions or report.markers:
            log.info("decisions: %d decision(s) and %d marker(s) moved from partition %r",
                     report.decisions, report.markers, LEGACY)
        return report
