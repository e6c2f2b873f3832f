"""Places for running builds (the `slots` table) on Azurite: a cap holds and a run holds one place
however many takes for it race."""

from __future__ import annotations

import threading
import uuid

from shared.adapters.wave_table import TableSlots


def test_racing_takes_for_one_run_leave_it_one_place(services):
    slots = TableSlots(services.storage)
    scope = f"race{uuid.uuid4().hex[:8]}"
    go = threading.Barrier(6)
    results: list[bool] = []

    def take() -> None:
        go.wait()
        results.append(slots.take(scope, 4, "da1"))

    threads = [threading.Thread(target=take) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [True] * 6
    assert slots.holders(scope) == ["da1"]  # one place, not one per take
    slots.give_back(scope, "da1")
    assert slots.holders(scope) == []


def test_a_cap_holds_and_taken_at_says_when(services):
    slots = TableSlots(services.storage)
    scope = f"cap{uuid.uuid4().hex[:8]}"
    assert [slots.take(scope, 2, f"da{n}") for n in range(3)] == [True, True, False]
    assert sorted(slots.taken_at(scope)) == ["da0", "da1"]
    assert all(when.tzinfo is not None for when in slots.taken_at(scope).values())


def test_a_sole_take_reads_the_scope_once_and_a_shared_one_checks_for_a_second_place(services):
    """A new wave's run (no one else can take a place for it) skips the look for a second place
    of the same run: one read and one insert; any other take still looks (racing takes above)."""
    slots = TableSlots(services.storage)
    scope = f"sole{uuid.uuid4().hex[:8]}"
    assert slots.take(scope, 4, "da0")
    table = slots.table
    reads: list[str] = []
    query = table.query_entities

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        reads.append(args[0])
        return query(*args, **kwargs)

    table.query_entities = counted  # type: ignore[method-assign]
    try:
        assert slots.take(scope, 4, "da1", sole=True)
        assert len(reads) == 1
        assert slots.take(scope, 4, "da2")
        assert len(reads) == 3  # the scope, then the run's own places
    finally:
        del table.query_entities
    assert sorted(slots.holders(scope)) == ["da0", "da1", "da2"]
