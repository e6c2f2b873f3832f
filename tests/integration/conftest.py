"""Fixtures of the integration tests: folders the stack's host reads directory contexts from."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import stack_context_folder


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """pytest's tmp_path, but under the stack's contexts folder: tasks created here with a directory
    context are run by the stack's host (tests.conftest.stack_context_folder)."""
    folder = stack_context_folder("test")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)
