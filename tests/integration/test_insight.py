"""Impact, staleness and `task why` on real Azurite and the real registry, through the service layer,
the HTTP routes of a host of this checkout, and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest

from shared.bootstrap import Services
from shared.domain.tasks import Task
from tests.conftest import unique_settings
from tests.integration.buildah_tools import push_base
from tests.own_host import ROOT, own_host

DOCKERFILE = "ARG BASE\nFROM ${BASE}\nRUN true\n"
BUILD_STAGE = "ARG BASE\nFROM ${BASE} AS tools\nFROM scratch\nCOPY --from=tools /bin/busybox /bin/busybox\n"


def create(services: Services, tmp_path: Path, name: str, base: str, images: list[str],
           dockerfile: str = DOCKERFILE, **fields) -> Task:
    context = tmp_path / name
    context.mkdir()
    (context / "Dockerfile").write_text(dockerfile)
    return services.tasks.create(Task(name=name, images=images, context=str(context),
                                      build_args={"BASE": base}, **fields))


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """base -> mid (mid:1) -> app; a disabled task and a build-stage one beside mid; in fresh tables."""
    services = Services(unique_settings())
    tmp = tmp_path_factory.mktemp("insight")
    registry = os.environ.get("REGISTRY", "localhost:5000")
    names = f"in{uuid.uuid4().hex[:6]}"
    base = f"{registry}/{names}/base:1"
    create(services, tmp, "mid", base, [f"{names}/mid:1", f"{names}/mid:{{{{.Run.ID}}}}"])
    create(services, tmp, "app", f"{registry}/{names}/mid:1", [f"{names}/app:{{{{.Run.ID}}}}"])
    create(services, tmp, "off", base, [f"{names}/off:1"], trigger_enabled=False)
    create(services, tmp, "tools", base, [f"{names}/tools:1"], dockerfile=BUILD_STAGE)
    yield services, base, names, tmp
    services.storage.drop_all()


def test_impact_follows_the_index_in_azurite(chain):
    services, base, names, _ = chain
    impact = services.impact.impact(base)
    levels = [[(n.task, n.rebuilds) for n in level] for level in impact.levels()]
    assert levels == [[("mid", True), ("off", False), ("tools", False)], [("app", True)]]
    assert impact.reads == 1  # the task list, with only the graph's properties
    assert services.impact.impact(f"{base}-nobody").nodes == []


def test_staleness_asks_the_real_registry(chain):
    services, base, names, tmp = chain
    first = push_base(tmp, base, "one")
    services.tasks.update("tools", build_args={"BASE": base})  # re-read: the base exists now
    assert services.tasks.get("tools").dependencies[0].digest == first
    second = push_base(tmp, base, "two")  # the stack's host hears it, but these tables are not its own
    entries, checked = services.staleness.report()
    (tools,) = [e for e in entries if e.task == "tools"]
    assert (tools.built_digest, tools.current_digest, tools.source) == (first, second, "registry")
    assert tools.cause == "not-a-runtime-dependency" and tools.state == "stale"
    assert checked["tasks"] == 4


@pytest.fixture(scope="module")
def host(chain, tmp_path_factory):
    services, *_ = chain
    settings = services.settings
    log = tmp_path_factory.mktemp("host") / "host.log"
    with own_host(log, BASETRIGGER_TABLE_PREFIX=settings.table_prefix,
                  BASETRIGGER_BUILD_QUEUE=settings.build_queue) as running:
        yield running


def test_the_impact_route_takes_an_encoded_reference(chain, host):
    _, base, names, _ = chain
    api = host.api()
    answer = api.get(f"{host.url}/api/bases/{quote(base, safe='')}/impact", timeout=30)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["image"] == base and body["rebuilds"] == 2
    levels = [[t["task"] for t in level["tasks"]] for level in body["levels"]]
    assert levels == [["mid", "off", "tools"], ["app"]]
    bad = api.get(f"{host.url}/api/bases/{quote('Not/Valid', safe='')}/impact", timeout=30)
    assert bad.status_code == 400 and "invalid image reference" in bad.json()["error"]["message"]
    unknown = api.get(f"{host.url}/api/bases/{quote(base + '-x', safe='')}/impact", timeout=30)
    assert unknown.status_code == 200 and unknown.json()["levels"] == []
    assert api.get(f"{host.url}/api/tasks/nobody/decisions", timeout=30).status_code == 404
    assert len(api.get(f"{host.url}/api/graph", timeout=30).json()["tasks"]) == 4


def cli(host, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, BASETRIGGER_URL=host.url, BASETRIGGER_KEY=host.key)
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_the_cli_asks_the_three_questions(chain, host):
    _, base, names, _ = chain
    tree = cli(host, "base", "impact", base)
    assert tree.returncode == 0, tree.stderr
    assert tree.stdout.splitlines()[0] == base and "app (level 2, runtime)" in tree.stdout
    dot = cli(host, "base", "impact", base, "-o", "dot")
    assert dot.stdout.startswith("digraph impact {")
    stale = cli(host, "task", "stale")
    assert stale.returncode == 0 and "tools" in stale.stdout and "not-a-runtime-dependency" in stale.stdout
    why = cli(host, "task", "why", "--name", "mid")
    assert why.returncode == 0 and "no recorded decision" in why.stdout
    assert cli(host, "decision", "list", "--top", "5").returncode == 0
    missing = cli(host, "task", "why", "--name", "nobody")
    assert missing.returncode == 2 and missing.stderr.startswith("error: task 'nobody' not found")
