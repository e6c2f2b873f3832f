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
