"""Fault tests run on a second stack, never on the shared default one.

`second_stack` starts one (scripts/stack.py up, its own STACK_DIR and free ports) for the session
and stops it afterwards (`down`, then its folder is removed). When BT_CHAOS_STACK_DIR names a stack
that is already up (scripts/chaos.py starts one for `make chaos`), the tests use that one and leave
stopping it to whoever started it.

`make test` runs the short versions (BT_CHAOS unset); `make chaos` sets BT_CHAOS=1 for the long ones.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.second_stack import SecondStack

LONG = os.environ.get("BT_CHAOS") == "1"


@pytest.fixture(scope="session")
def second_stack() -> Iterator[SecondStack]:
    attached = os.environ.get("BT_CHAOS_STACK_DIR")
    if attached:
        stack = SecondStack(Path(attached))
        stack.up()  # harmless when it runs; restarts a part an earlier fault left stopped
        yield stack
        return
    folder = Path(tempfile.mkdtemp(prefix="bt-chaos-"))
    stack = SecondStack.on_free_ports(folder)
    try:
        stack.up()
        yield stack
    finally:
        try:
            stack.down()
        finally:
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def registry_env(second_stack, monkeypatch) -> dict[str, str]:
    """The second stack's settings, with its registry's CA folder for buildah (tests/integration/
    buildah_tools reads REGISTRY_CERT_DIR)."""
    env = second_stack.env()
    monkeypatch.setenv("REGISTRY_CERT_DIR", env["REGISTRY_CERT_DIR"])
    return env
