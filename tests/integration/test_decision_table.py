"""Decisions in Table Storage on Azurite: rows spread over event, hour and image partitions, lists
newest first from one key range, and decisions stored by schema 1 (one partition `decision`) still
read, in lists and by event, until `admin migrate` has moved them."""

from __future__ import annotations

from datetime import timedelta

from azure.data.tables import UpdateMode

from shared.adapters.decision_table import LEGACY, TableDecisionLog, to_entity
from shared.domain.decisions import Decision
from shared.domain.image_ref import encode_key
from shared.domain.vocabulary import EventSource, Outcome, utc_now

BASES = ("localhost:5000/base/node:20", "localhost:5000/base/python:3.12")


def _decisions(count: int, start: int = 0) -> list[Decision]:
    """Decisions a minute apart from the start of an hour three hours ago, oldest first,
    alternating between two images."""
    first = (utc_now() - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    return [Decision(event_id=f"event-{n}", source=EventSource.DISTRIBUTION, outcome=Outcome.QUEUED,
                     reason=f"decision {n}", image=BASES[n % 2], digest=f"sha256:{n:064x}",
                     runs=[f"da{n}"], time=first + timedelta(minutes=n))
            for n in range(start, start + count)]


def _partitions(log: TableDecisionLog) -> set[str]:
    return {e["PartitionKey"] for e in log.table.list_entities(select=["PartitionKey"])}


def _store_as_schema_1(log: TableDecisionLog, decision: Decision) -> None:
    """What schema 1 wrote for a handled event: the decision and its marker in the partition
    `decision`, in one transaction (written raw, as that version did)."""
    row = dict(to_entity(decision), PartitionKey=LEGACY, SchemaVersion=1)
    marker = {"PartitionKey": LEGACY, "RowKey": f"e|{encode_key(decision.event_id)}",
              "DecisionKey": row["RowKey"]}
    log.table.submit_transaction([("upsert", row), ("upsert", marker, {"mode": UpdateMode.MERGE})])


def test_decisions_spread_over_partitions_and_list_newest_first(services):
    log = services.decisions
    stored = _decisions(70)
    for decision in stored:
        log.record(decision)
    partitions = _partitions(log)
    assert len({p for p in partitions if p.startswith("event|")}) > 10  # 70 events over 32 buckets
    assert len({p for p in partitions if p.startswith("time|")}) == 2  # 70 minutes from hh:00
    assert len({p for p in partitions if p.startswith("image|")}) in (1, 2)
    assert LEGACY not in partitions
    newest = list(reversed(stored))
    assert [d.event_id for d in log.recent(top=15)] == [d.event_id for d in newest[:15]]
    assert [d.event_id for d in log.recent(top=100)] == [d.event_id for d in newest]
    of_node = log.recent(top=10, image=BASES[0])
    assert [d.event_id for d in of_node] == [d.event_id for d in newest if d.image == BASES[0]][:10]
    assert log.seen("event-7").reason == "decision 7"
    assert log.begin("event-7").reason == "decision 7"  # a redelivery: handled already
    assert log.seen("event-unknown") is None


def test_a_redelivery_writes_the_copies_a_crash_left_out(services):
    # The decision and its marker were written; the process died before the list copies.
    log = services.decisions
    (decision,) = _decisions(1)
    row = to_entity(decision)
    marker = {"PartitionKey": row["PartitionKey"], "RowKey": f"e|{encode_key(decision.event_id)}",
              "DecisionKey": row["RowKey"]}
    log.table.submit_transaction([("upsert", row), ("upsert", marker)])
    assert log.recent(top=5) == []
    assert log.begin(decision.event_id).reason == decision.reason
    assert [d.event_id for d in log.recent(top=5)] == [decision.event_id]
    assert [d.event_id for d in log.recent(top=5, image=decision.image)] == [decision.event_id]


def test_decisions_stored_by_schema_1_still_read_and_move_when_seen_or_migrated(services):
    log = services.decisions
    old, new = _decisions(30), _decisions(5, start=30)
    for decision in old:
        _store_as_schema_1(log, decision)
    # A push held by a delivery that went silent long ago, and one held right now.
    for key, since in (("p|stale", utc_now() - timedelta(hours=1)), ("p|held", utc_now())):
        log.table.upsert_entity({"PartitionKey": LEGACY, "RowKey": key, "Since": since.isoformat()})
    for decision in new:
        log.record(decision)
    everything = list(reversed(old + new))
    # Lists merge the old partition in, newest first.
    assert [d.event_id for d in log.recent(top=15)] == [d.event_id for d in everything[:15]]
    assert [d.event_id for d in log.recent(top=50)] == [d.event_id for d in everything]
    of_python = [d.event_id for d in everything if d.image == BASES[1]]
    assert [d.event_id for d in log.recent(top=50, image=BASES[1])] == of_python
    # An event handled before the upgrade is still handled (a redelivery dispatches nothing), and
    # reading it moved it.
    assert log.begin("event-3").reason == "decision 3"
    assert log.seen("event-4").reason == "decision 4"
    moved = {e["RowKey"] for e in log.table.query_entities("PartitionKey eq @pk", parameters={"pk": LEGACY})}
    assert "e|event-3" not in moved and "e|event-4" not in moved and "e|event-5" in moved
    # `admin migrate` moves the rest; the hold a delivery has now stays; again, it finds nothing.
    report = log.migrate_legacy()
    assert report.to_dict() == {"decisions": 28, "markers": 28, "holds": 1}
    left = [e["RowKey"] for e in log.table.query_entities("PartitionKey eq @pk", parameters={"pk": LEGACY})]
    assert left == ["p|held"]
    assert log.migrate_legacy().to_dict() == {"decisions": 0, "markers": 0, "holds": 0}
    fresh = TableDecisionLog(services.storage)  # another process: nothing cached
    assert [d.event_id for d in fresh.recent(top=50)] == [d.event_id for d in everything]
    assert [d.event_id for d in fresh.recent(top=50, image=BASES[1])] == of_python
    assert fresh.begin("event-20").reason == "decision 20"
    assert fresh.begin("event-new") is None  # a new event is claimed as before
