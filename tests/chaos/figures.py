"""The figures `make chaos` prints (scripts/chaos.py): what each fault, fuzz and canary test saw.

A test calls `record(name, deliveries=..., runs=..., server_errors=..., lost=..., stuck=...,
duplicates=..., secret_hits=...)`; with BT_CHAOS_FIGURES naming a file (scripts/chaos.py sets it)
one JSON line is appended to it, otherwise nothing happens. The tests assert their own zeros; the
figures are what the report shows next to them.
"""

from __future__ import annotations

import json
import os

# The figures that must be zero, and the ones that are counts of what was done.
DUE_ZERO = ("server_errors", "lost", "stuck", "duplicates", "extra_messages", "secret_hits", "second_builds",
            "burnt_ids")
COUNTS = ("deliveries", "runs", "messages", "requests", "examples")


def record(test: str, **figures: int) -> None:
    path = os.environ.get("BT_CHAOS_FIGURES")
    if not path:
        return
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps({"test": test, **{k: int(v) for k, v in figures.items()}}) + "\n")
