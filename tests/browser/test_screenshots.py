"""The product's story in the dashboard, with readable names: the pictures of the README.

The tutorial's base `baseimages/node:9-alpine` (on the stack's registry without notifications, so
the poller finds its pushes), an image `mid` built FROM it and two apps built FROM `mid`: `web`
and `api`, whose native module only builds on node 9. A host of this checkout on tables and a
queue of its own (the page shows this story and nothing else), one build at a time per wave, and a
breaker that holds a wave once its failures pass 40 % of what it finished.

1. node 9.11.2a is pushed: one wave rebuilds `mid`, then `web` and `api` (three levels).
2. node 10.0.0 is pushed: `mid` builds, `api` fails, and the breaker holds `web`.
3. The wave is resumed: `web` builds; `api` is the one stale image, and says why.

With BASETRIGGER_SCREENSHOTS=DIR (`make screenshots`), each view is saved as DIR/<view>.png.
Run as a module: each test goes on from where the one before left the story.
"""

from __future__ import annotations

import contextlib
import os
import shutil

import pytest

from tests.browser.test_dashboard import (
    BUILD_SECONDS,
    open_page,
    open_waves,
    screenshot,
    wave_row,
    wave_when,
)
from tests.conftest import stack_context_folder, unique_settings
from tests.integration.buildah_tools import buildah, push_base
from tests.own_host import chromium, own_host

MID_DOCKERFILE = "ARG BASE\nFROM ${BASE}\nRUN echo 'shared libraries of the apps' > /etc/mid\n"
WEB_DOCKERFILE = "ARG BASE\nFROM ${BASE}\nRUN cat /etc/base-version > /web-node-version\n"
# api's native module is built for node 9: on another major version its build fails.
API_DOCKERFILE = ("ARG BASE\nFROM ${BASE}\n"
                  "RUN grep -q '^9[.]' /etc/base-version || { echo 'api needs node 9'; exit 1; }\n")


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: eval \"$(python3 scripts/stack.py env)\" after `up`")
    return value


@pytest.fixture(scope="module")
def story(tmp_path_factory):
    """The host, its API session and the names of the story; the base and `mid:1` pushed, the three
    tasks created."""
    settings = unique_settings()
    registry, public = _env("REGISTRY"), _env("PUBLIC_REGISTRY")
    folder = stack_context_folder("story")
    node = f"{public}/baseimages/node:9-alpine"
    mid = f"{registry}/mid:1"
    push_base(folder, node, "9.11.2")
    push_base(folder, mid, "9.11.2")  # the mid the apps were first built on
    log = tmp_path_factory.mktemp("host") / "host.log"
    with own_host(log, BASETRIGGER_TABLE_PREFIX=settings.table_prefix,
                  BASETRIGGER_BUILD_QUEUE=settings.build_queue,
                  BASETRIGGER_SECRET_KEY=settings.secret_key or "",
                  BASETRIGGER_REGISTRY=registry, BASETRIGGER_POLL_INTERVAL="2",
                  BASETRIGGER_WAVE_MAX_RUNNING="1", BASETRIGGER_WAVE_BREAKER_FAILURES="1",
                  BASETRIGGER_WAVE_BREAKER_SHARE="0.4") as host:
        api = host.api()
        for name, dockerfile, base, images in (
                ("mid", MID_DOCKERFILE, node, ["mid:1"]),
                ("web", WEB_DOCKERFILE, mid, ["web:{{.Run.ID}}"]),
                ("api", API_DOCKERFILE, mid, ["api:{{.Run.ID}}"])):
            context = folder / name
            context.mkdir()
            (context / "Dockerfile").write_text(dockerfile)
            created = api.post(f"{host.url}/api/tasks", timeout=60, json={
                "name": name, "images": images, "context": str(context), "build_args": {"BASE": base}})
            assert created.status_code == 201, created.text
        try:
            yield {"host": host, "node": node, "mid": mid, "folder": folder, "waves": {}, "pushed": []}
        finally:
            from shared.bootstrap import Services

            Services(settings).storage.drop_all()
            shutil.rmtree(folder, ignore_errors=True)
            with contextlib.suppress(Exception):  # the local tags this story made, nobody else's
                buildah("rmi", "-f", node, mid)


@pytest.fixture(scope="module")
def browser():
    with chromium() as context:
        yield context


def push_node(story, version: str, browser):
    """Push node `version`; the page on the Waves tab, and the row of the wave the push started."""
    host = story["host"]
    page = open_waves(browser, host)
    digest = push_base(story["folder"], story["node"], version)
    story["pushed"].append(digest)
    row = wave_row(page, f"{story['node']}@{digest}")
    return page, row, digest


def test_a_node_push_rebuilds_mid_then_web_and_api_in_one_wave(browser, story):
    page, row, _ = push_node(story, "9.11.2a", browser)
    wave_id = row.get_attribute("data-wave-id")
    story["waves"]["upgrade"] = wave_id
    row.locator("button").click()
    page.locator(f'#waves tr[data-wave-id="{wave_id}"][data-state="Done"]').wait_for(
        timeout=3 * BUILD_SECONDS * 1000)
    page.locator("#wave-title .badge", has_text="Done").wait_for(timeout=20_000)
    levels = {task: page.locator(f'#wave-members tr[data-task="{task}"]').evaluate(
        "tr => tr.closest('section').dataset.level") for task in ("mid", "web", "api")}
    assert levels == {"mid": "1", "web": "2", "api": "2"}
    assert "3 Succeeded" in row.inner_text()

    # the Graph tab: what a push of node rebuilds: mid, then web and api built FROM mid
    page.click("#tab-graph")
    page.fill("#graph-form [name=image]", story["node"])
    page.click("#graph-form button[type=submit]")
    page.locator(f'#graph g.node.image.root[data-id="{story["node"]}"]').wait_for(timeout=10_000)
    for task in ("mid", "web", "api"):
        page.locator(f'#graph g.node.task[data-task="{task}"][data-status="Succeeded"]').wait_for(
            timeout=10_000)
    assert "3 of 3 dependent task(s) would rebuild" in page.locator("#graph-summary").inner_text()
    screenshot(page, "graph")
    assert page.errors == []
    page.close()


def test_node_10_fails_api_and_the_breaker_holds_web(browser, story):
    host = story["host"]
    page, row, _ = push_node(story, "10.0.0", browser)
    wave_id = row.get_attribute("data-wave-id")
    story["waves"]["major"] = wave_id
    row.locator("button").click()
    page.locator(f'#waves tr[data-wave-id="{wave_id}"][data-state="Held"]').wait_for(
        timeout=3 * BUILD_SECONDS * 1000)
    page.locator('#wave-members tr[data-task="web"][data-status="Held"]').wait_for(timeout=20_000)
    assert page.locator('#wave-members tr[data-task="mid"]').get_attribute("data-status") == "Succeeded"
    assert page.locator('#wave-members tr[data-task="api"]').get_attribute("data-status") == "Failed"
    assert "circuit breaker" in page.locator("#wave-facts").inner_text()
    screenshot(page, "waves")

    page.click("#wave-graph")
    page.locator(f'#graph g.node.image.root[data-id="{story["node"]}"]').wait_for(timeout=10_000)
    page.locator(f'#graph g.node.task.in-wave[data-wave="{wave_id}"][data-status="Held"]').wait_for(
        timeout=10_000)
    assert page.locator(f'#graph g.node.task.in-wave[data-wave="{wave_id}"]').count() == 3
    screenshot(page, "wave-graph")
    assert host.api().get(f"{host.url}/api/waves/{wave_id}", timeout=30).json()["state"] == "Held"
    assert page.errors == []
    page.close()


def test_resumed_web_builds_and_api_is_the_one_stale_image(browser, story):
    host = story["host"]
    wave_id = story["waves"]["major"]
    resumed = host.api().post(f"{host.url}/api/waves/{wave_id}/resume", timeout=30)
    assert resumed.status_code == 200, resumed.text
    wave = wave_when(host, wave_id, lambda w: w["state"] == "Done", timeout=2 * BUILD_SECONDS)
    assert {m["task"]: m["outcome"] for m in wave["members"]} == {
        "mid": "Succeeded", "web": "Succeeded", "api": "Failed"}

    page = open_page(browser, f"{host.dashboard}#key={host.key}")
    page.click("#tab-stale")
    page.locator("#stale-summary").filter(has_text="checked").wait_for(timeout=60_000)
    assert page.locator("#stale-summary").inner_text().startswith("1 stale")
    row = page.locator('#stale tr[data-task="api"]')
    assert "run-failed" in row.inner_text()
    assert page.locator('#stale tr[data-task="web"]').count() == 0
    screenshot(page, "stale")

    # the Decisions tab: each push of node the poller found, and what it decided
    page.click("#tab-decisions")
    page.fill("#decision-filters [name=image]", story["node"])
    page.click("#decision-filters button[type=submit]")
    page.locator("#decisions tbody td strong").nth(1).wait_for(timeout=10_000)
    shown = page.locator("#decisions tbody").inner_text()
    for digest in story["pushed"]:
        assert digest.removeprefix("sha256:")[:12] in shown, shown
    screenshot(page, "decisions")

    # the Runs tab: both waves' runs, api's failed build and why in its log
    page.click("#tab-runs")
    failed = page.locator("#runs tbody tr", has_text="Failed").first
    failed.wait_for(timeout=20_000)
    assert "api" in failed.inner_text()
    failed.locator("button").click()
    page.locator("#run-log", has_text="api needs node 9").wait_for(timeout=20_000)
    page.locator("#run-facts .badge", has_text="Failed").wait_for(timeout=10_000)
    assert page.locator("#runs tbody tr").count() == 6
    screenshot(page, "runs")
    assert page.errors == []
    page.close()
