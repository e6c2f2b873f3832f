"""Wave members in Table Storage on Azurite: a wave's members spread over its bucket partitions,
read back as one key range, the ready ones in key order across the buckets; and waves stored by
schema 1 (every member in the partition `<wave id>`) still read, moved when a process first
touches them or by `admin migrate`."""

from __future__ import annotations

import json

from shared.adapters.wave_table import MEMBER_BUCKETS, PARTITION, TableWaveRepository
from shared.domain.waves import Member, Wave


def _wave(store: TableWaveRepository, wave_id: str, count: int, levels: int = 3) -> tuple[Wave, list[Member]]:
    """A wave whose members are spread over `levels` levels; those of level 0 are ready."""
    run_ids = [f"da{int(wave_id[1:]) + n}" for n in range(count)]
    members = [Member(wave_id=wave_id, task=f"task{n:04d}", run_id=run_id, level=n % levels,
                      waits_for=[] if n % levels == 0 else [f"task{n - n % levels:04d}"])
               for n, run_id in enumerate(run_ids)]
    return Wave(wave_id=wave_id, root="localhost:5000/base@sha256:" + "0" * 64, event_id=None,
                levels=levels), members


def _store_as_schema_1(store: TableWaveRepository, wave: Wave, members: list[Member]) -> None:
    """What schema 1 wrote, raw: members and ready rows in the partition `<wave id>`, then the wave."""
    rows = [{"PartitionKey": wave.wave_id, "RowKey": f"m|{m.task}", "SchemaVersion": 1,
             "Data": json.dumps(m.to_record())} for m in members]
    rows += [{"PartitionKey": wave.wave_id, "RowKey": store._ready_key(m), "Task": m.task}
             for m in members if m.ready]
    for start in range(0, len(rows), 100):
        store.table.submit_transaction([("upsert", row) for row in rows[start:start + 100]])
    store.table.upsert_entity({"PartitionKey": PARTITION, "RowKey": store._key(wave.wave_id),
                               "SchemaVersion": 1, "State": str(wave.state),
                               "Data": json.dumps(wave.to_record())})


def _rows_in(store: TableWaveRepository, partition: str) -> list[str]:
    rows = store.table.query_entities("PartitionKey eq @pk", parameters={"pk": partition}, select=["RowKey"])
    return [e["RowKey"] for e in rows]


def _first_ready(members: list[Member], store: TableWaveRepository, limit: int) -> list[str]:
    return [m.task for m in sorted((m for m in members if m.ready), key=store._ready_key)][:limit]


def test_a_big_wave_spreads_its_members_and_reads_them_back_in_order(services):
    store = services.waves.waves
    wave, members = _wave(store, "w1001", 600)
    store.create(wave, members)
    partitions = {e["PartitionKey"] for e in store.table.list_entities(select=["PartitionKey"])}
    assert partitions == {PARTITION} | {f"w1001|{n}" for n in range(MEMBER_BUCKETS)}
    assert sorted(m.task for m in store.members("w1001")) == [m.task for m in members]
    # The next to release: lowest level, then oldest run, whichever bucket they are in.
    assert [m.task for m in store.ready("w1001", 30)] == _first_ready(members, store, 30)
    first = store.member("w1001", "task0003")
    assert first.level == 0 and first.etag
    first.released = True
    assert store.save_member(first)
    store.unmark_ready(first)
    assert "task0003" not in [m.task for m in store.ready("w1001", 30)]
    assert store.member("w1001", "task0003").released
    assert not store.add_member(first)  # one member per task
    assert store.member("w1001", "nobody") is None


def test_waves_stored_by_schema_1_still_read_and_move_when_touched_or_migrated(services):
    store = services.waves.waves
    touched, t_members = _wave(store, "w2001", 150)
    untouched, u_members = _wave(store, "w3001", 120)
    _store_as_schema_1(store, touched, t_members)
    _store_as_schema_1(store, untouched, u_members)
    # Another process (nothing cached) reads the old wave: all of it, and its ready members in order.
    reader = TableWaveRepository(services.storage, services.runs.ids)
    assert sorted(m.task for m in reader.members("w2001")) == [m.task for m in t_members]
    assert _rows_in(store, "w2001") == []  # moved into the buckets on that first read
    assert [m.task for m in reader.ready("w2001", 10)] == _first_ready(t_members, store, 10)
    member = reader.member("w2001", "task0004")
    member.arrived = ["task0003"]
    assert reader.save_member(member)  # a change is written to the moved member
    # A third process, first touching the other old wave by one member.
    assert TableWaveRepository(services.storage, services.runs.ids).member("w3001", "task0007").run_id == \
        u_members[7].run_id
    # `admin migrate` finds nothing left to move; a schema-1 wave written meanwhile (a rolling
    # deploy) it moves, and a member changed since the first move is not set back.
    late, l_members = _wave(store, "w4001", 50)
    _store_as_schema_1(store, late, l_members)
    report = TableWaveRepository(services.storage, services.runs.ids).migrate_legacy()
    assert report.to_dict() == {"waves": 1, "members": 50, "ready_rows": 17}
    assert _rows_in(store, "w4001") == []
    assert TableWaveRepository(services.storage, services.runs.ids).migrate_legacy().to_dict() == \
        {"waves": 0, "members": 0, "ready_rows": 0}
    assert store.member("w2001", "task0004").arrived == ["task0003"]
    assert len(store.members("w4001")) == 50


def test_members_recorded_from_a_backlog_keep_what_changed_since(services):
    """create_absent (a big wave's backlog): members inserted or skipped, with the ready marks of
    those ready and unreleased as stored, even where a transaction meets a member already there."""
    store = services.waves.waves
    wave, members = _wave(store, "w700", 60)
    released_at_once, planned = members[0], members[1:]
    released_at_once.released = True
    store.create(wave, [released_at_once])
    # A member recorded and released meanwhile (a release that recorded the backlog first).
    store.create_absent([planned[2]])  # task0003: level 0, ready
    early = store.member("w700", planned[2].task)
    assert early is not None and [m.task for m in store.ready("w700", 100)] == [early.task]
    early.released = True
    assert store.save_member(early)
    store.unmark_ready(early)
    store.create_absent(members)  # the whole plan, late, and again: nothing turns back
    store.create_absent(planned)
    stored = {m.task: m for m in store.members("w700")}
    assert len(stored) == 60 and stored[released_at_once.task].released and stored[early.task].released
    ready = sorted(m.task for m in store.ready("w700", 100))
    assert ready == sorted(m.task for m in members if m.ready and m.task not in
                           (released_at_once.task, early.task))
