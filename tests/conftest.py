"""Fixtures shared by the test suites: the local stack's settings and per-test storage names."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase

from shared import config
from shared.bootstrap import Services

# Property-based tests (tests/property, schemathesis): `ci` is bounded for `make test`, `chaos` is
# `make chaos`'s long mode. HYPOTHESIS_PROFILE picks one (default `ci`). No deadlines: examples that
# reach Azurite or a host take as long as they take, and timing is never what a test asserts.
# Failing examples are kept under .stack/ (ignored by git) and replayed first on the next run.
_EXAMPLES = DirectoryBasedExampleDatabase(str(Path(__file__).resolve().parents[1] / ".stack" / "hypothesis"))
settings.register_profile("ci", max_examples=40, deadline=None, database=_EXAMPLES, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("chaos", max_examples=1500, deadline=None, database=_EXAMPLES, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def azurite_connection_string() -> str:
    """The stack's Azurite (exported by `make test` / `scripts/stack.py env`)."""
    value = os.environ.get("AzureWebJobsStorage")
    if not value:
        pytest.fail("AzureWebJobsStorage is not set: run the tests with `make test`, which starts the stack")
    return value


def stack_context_folder(prefix: str) -> Path:
    """A new folder under the stack's contexts folder (STACK_CONTEXTS): a task with a directory
    context there is read in place by the stack's host, which reads directories only under its
    roots (BASETRIGGER_LOCAL_CONTEXT_ROOTS; scripts/local_stack/settings.py). The caller removes it."""
    contexts = os.environ.get("STACK_CONTEXTS")
    if not contexts:
        pytest.fail("STACK_CONTEXTS is not set: eval \"$(python3 scripts/stack.py env)\" after `up`")
    Path(contexts).mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=contexts))


def unique_settings(**overrides) -> config.Settings:
    """Settings with a fresh table prefix and queue, so tests never see each other's data."""
    suffix = uuid.uuid4().hex[:10]
    env = {
        "AzureWebJobsStorage": azurite_connection_string(),
        "BASETRIGGER_TABLE_PREFIX": f"t{suffix}",
        "BASETRIGGER_BUILD_QUEUE": f"runs-{suffix}",
        "BASETRIGGER_REGISTRY_CA": os.environ.get("BASETRIGGER_REGISTRY_CA", ""),
        "BASETRIGGER_REGISTRY": os.environ.get("REGISTRY", "localhost:5000"),
        "BASETRIGGER_WORK_DIR": os.environ.get("BASETRIGGER_WORK_DIR", "/tmp/basetrigger-tests"),
        "BASETRIGGER_SECRET_KEY": "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS0zMmJ5dGU=",
        # Directory contexts in pytest's tmp_path folders (under STACK_CONTEXTS in tests/integration)
        # are read in place, as the local stack reads its roots; a test of the fence sets its own.
        "BASETRIGGER_LOCAL_CONTEXT_ROOTS": os.pathsep.join(
            [tempfile.gettempdir(), os.environ.get("BASETRIGGER_LOCAL_CONTEXT_ROOTS", "")]),
    }
    env.update({k: str(v) for k, v in overrides.items()})
    return config.load(env)


@pytest.fixture
def services() -> Iterator[Services]:
    services = Services(unique_settings())
    yield services
    services.storage.drop_all()  # a long-lived local Azurite would otherwise keep every test's tables


@pytest.fixture(scope="module")
def stack() -> Services:
    """The services of the running stack: the tables and queue the local Functions host uses."""
    for name in ("AzureWebJobsStorage", "BASETRIGGER_URL", "BASETRIGGER_KEY", "REGISTRY"):
        if not os.environ.get(name):
            pytest.fail(f"{name} is not set: run the tests with `make test`, which starts the stack")
    return Services(config.load(dict(os.environ, BASETRIGGER_REGISTRY=os.environ["REGISTRY"])))
