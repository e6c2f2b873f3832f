"""Fixtures of the integration tests: folders the stack's host reads directory contexts from."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """pytest's tmp_path, but under the stack's contexts folder (STACK_CONTEXTS): tasks created here
    with a directory context are run by the stack's host, which reads a directory in place only
    under its roots (BASETRIGGER_LOCAL_CONTEXT_ROOTS; see scripts/local_stack/settings.py)."""
    contexts = os.environ.get("STACK_CONTEXTS")
    if not contexts:
        pytest.fail("STACK_CONTEXTS is not set: eval \"$(python3 scripts/stack.py env)\" after `up`")
    Path(contexts).mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="test-", dir=contexts))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)
