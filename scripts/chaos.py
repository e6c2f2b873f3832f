#!/usr/bin/env python3
"""`make chaos`: the long mode of the fault, fuzz and canary suite, on a stack of its own.

    python3 scripts/chaos.py [--keep] [-- PYTEST ARGS...]

Starts a second local stack (scripts/stack.py with its own STACK_DIR and free ports; the shared
default stack is never touched), runs with the chaos settings

    tests/property                         hypothesis on every edge parser, the functions on real
                                           storage, schemathesis against a host of this checkout
    tests/integration/test_secret_canary.py  planted secrets searched for everywhere
    tests/chaos                            bursts, Azurite stopped, the host killed, the registry down

(HYPOTHESIS_PROFILE=chaos, BT_CHAOS=1), prints the figures the tests recorded (deliveries, runs,
5xx, lost, stuck, duplicates, extra messages, burnt run ids, second builds, secret hits), and stops the stack
(`--keep` leaves it running and says where; otherwise its logs are kept in .stack/chaos/<time>/).
Exits non-zero when a test failed or a figure that must be zero is not.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.chaos.figures import DUE_ZERO  # noqa: E402
from tests.chaos.second_stack import SecondStack  # noqa: E402

SUITES = ["tests/property", "tests/integration/test_secret_canary.py", "tests/chaos"]
# Columns of the report: (figure, heading).
COLUMNS = [
    ("deliveries", "deliveries"),
    ("requests", "requests"),
    ("runs", "runs"),
    ("server_errors", "5xx"),
    ("lost", "lost"),
    ("stuck", "stuck"),
    ("duplicates", "dup runs"),
    ("extra_messages", "extra msgs"),
    ("burnt_ids", "burnt ids"),
    ("second_builds", "2nd builds"),
    ("secret_hits", "secret hits"),
]


def report(lines: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """The figures as a table (one row per test, then the totals) and the due zeros that are not."""
    totals: dict[str, int] = defaultdict(int)
    rows = []
    for entry in lines:
        rows.append([entry["test"]] + [str(entry.get(key, "")) for key, _ in COLUMNS])
        for key, value in entry.items():
            if key != "test":
                totals[key] += value
    rows.append(["total"] + [str(totals.get(key, 0)) for key, _ in COLUMNS])
    header = ["test"] + [title for _, title in COLUMNS]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    text = "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, ["-" * w for w in widths], *rows]
    )
    extras = sorted({k for e in lines for k in e} - {"test"} - {k for k, _ in COLUMNS})
    if extras:
        text += "\n" + "\n".join(
            f"  {e['test']}: " + ", ".join(f"{k}={e[k]}" for k in extras if k in e)
            for e in lines
            if any(k in e for k in extras)
        )
    broken = [f"{key}={totals[key]}" for key in DUE_ZERO if totals.get(key)]
    return text, broken


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="leave the chaos stack running afterwards")
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    options = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="bt-chaos-"))
    stack = SecondStack.on_free_ports(folder)
    figures = folder / "figures.jsonl"
    started = time.monotonic()
    print(
        f"chaos: starting a stack of its own in {folder} (ports {', '.join(map(str, stack.ports.values()))})",
        flush=True,
    )
    try:
        stack.up()
        env = {
            **stack.command_env(),
            **stack.env(),
            "HYPOTHESIS_PROFILE": "chaos",
            "BT_CHAOS": "1",
            "BT_CHAOS_STACK_DIR": str(folder),
            "BT_CHAOS_FIGURES": str(figures),
        }
        code = subprocess.call(
            [sys.executable, "-m", "pytest", *SUITES, "-q", "-p", "no:cacheprovider", *options.pytest_args],
            cwd=ROOT,
            env=env,
        )
    finally:
        if options.keep:
            print(f"chaos: the stack keeps running: STACK_DIR={folder} python3 scripts/stack.py down")
        else:
            try:
                stack.down()
            except Exception as exc:  # noqa: BLE001 - report, and leave the folder for a later `down`
                print(f"chaos: stopping the stack failed ({exc}); "
                      f"STACK_DIR={folder} python3 scripts/stack.py down")
                options.keep = True
    lines = [json.loads(line) for line in figures.read_text().splitlines()] if figures.exists() else []
    text, broken = report(lines)
    print(f"\nchaos figures ({time.monotonic() - started:.0f} s; pytest exit {code}):\n{text}")
    if broken:
        print("chaos: NOT ZERO: " + ", ".join(broken))
    else:
        print("chaos: every figure that must be zero is zero" if lines else "chaos: no figures recorded")
    if not options.keep:
        # The stack's logs (the host's above all) and the figures stay for a look afterwards.
        kept = ROOT / ".stack" / "chaos" / time.strftime("%Y%m%d-%H%M%S")
        kept.mkdir(parents=True, exist_ok=True)
        shutil.copytree(folder / "logs", kept / "logs", dirs_exist_ok=True)
        if figures.exists():
            shutil.copy(figures, kept / "figures.jsonl")
        print(f"chaos: logs and figures kept in {kept.relative_to(ROOT)}")
        shutil.rmtree(folder, ignore_errors=True)
    return 1 if code or broken or not lines else 0


if __name__ == "__main__":
    sys.exit(main())
