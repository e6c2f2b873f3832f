"""The dashboard in a real headless Chromium (Debian's), against a host of this checkout on the real
stack: Azurite, the TLS registry, buildah. A base is pushed with buildah; the registry notifies the
stack, which queues the rebuild; the page, never reloaded, shows the run appear, follow its log and
finish, and draws the base and its dependents.

With BASETRIGGER_SCREENSHOTS=DIR (`make screenshots`), each view is also saved as DIR/<view>.png.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import pytest

from tests.integration.buildah_tools import push_base
from tests.own_host import chromium, own_host

BUILD_SECONDS = 240  # one buildah build of a busybox image, with room for a busy machine
APP_DOCKERFILE = "ARG BASE\nFROM ${BASE}\nRUN cat /etc/base-version > /app-base-version\n"
TOOLS_DOCKERFILE = ("ARG BASE\nFROM ${BASE} AS tools\nFROM scratch\n"
                    "COPY --from=tools /bin/busybox /bin/busybox\n")
SHOTS = os.environ.get("BASETRIGGER_SCREENSHOTS")


def screenshot(page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"))


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    # The stack's tables and queue: the registry's notifications reach the stack's own host, and
    # the runs they queue are what this page must show.
    with own_host(tmp_path_factory.mktemp("host") / "host.log") as running:
        yield running


@pytest.fixture(scope="module")
def browser():
    with chromium() as context:
        yield context


@pytest.fixture(scope="module")
def scene(host, tmp_path_factory):
    """A base in the registry and two tasks built FROM it: `app` (runtime) and `tools` (build stage)."""
    tmp = tmp_path_factory.mktemp("scene")
    names = f"ui{uuid.uuid4().hex[:8]}"
    registry = os.environ.get("REGISTRY", "localhost:5000")
    base = f"{registry}/{names}/base:1"
    push_base(tmp, base, "one")
    api = host.api()
    tasks = {}
    for name, dockerfile in (("app", APP_DOCKERFILE), ("tools", TOOLS_DOCKERFILE)):
        context = tmp / name
        context.mkdir()
        (context / "Dockerfile").write_text(dockerfile)
        created = api.post(f"{host.url}/api/tasks", timeout=60, json={
            "name": f"{names}-{name}", "images": [f"{names}/{name}:{{{{.Run.ID}}}}"], "context": str(context),
            "build_args": {"BASE": base}})
        assert created.status_code == 201, created.text
        tasks[name] = created.json()["name"]
    yield {"base": base, "tmp": tmp, "pushed": False, **tasks}
    for name in tasks.values():
        api.delete(f"{host.url}/api/tasks/{name}", timeout=30)


def open_page(browser, url: str):
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    page.errors = errors
    return page


def test_without_a_key_the_page_loads_but_says_the_api_refused(browser, host):
    page = open_page(browser, host.dashboard)
    status = page.locator("#status")
    status.filter(has_text="401").wait_for(timeout=10_000)
    assert "No function key" in status.inner_text()
    assert page.locator("#runs tbody tr").count() == 0
    page.goto(f"{host.dashboard}#key=wrong-key")
    page.reload()
    status.filter(has_text="refused").wait_for(timeout=10_000)
    assert page.errors == []
    page.close()


def test_with_the_key_from_the_fragment_the_runs_load_and_the_key_leaves_the_url(browser, host):
    page = open_page(browser, f"{host.dashboard}#key={host.key}")
    page.locator("#status").filter(has_text="runs shown").wait_for(timeout=10_000)
    assert host.key not in page.url and "error" not in (page.locator("#status").get_attribute("class") or "")
    assert page.evaluate("performance.getEntriesByName('bt:first-runs').length") == 1
    page.close()


def test_the_views_work_with_the_keyboard(browser, host):
    page = open_page(browser, f"{host.dashboard}#key={host.key}")
    page.locator("#status").filter(has_text="runs shown").wait_for(timeout=10_000)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "key-input"
    page.focus("#tab-runs")
    page.keyboard.press("ArrowRight")
    assert page.evaluate("document.activeElement.id") == "tab-graph"
    assert page.locator("#view-graph").is_visible() and not page.locator("#view-runs").is_visible()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    assert page.locator("#view-waves").is_visible()
    assert "not built yet" in page.locator("#view-waves").inner_text()
    screenshot(page, "waves")
    # a visible focus ring: the focused tab's outline is drawn
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("", "none")
    page.close()


def test_a_base_push_shows_a_new_run_its_log_and_its_end_without_a_reload(browser, host, scene):
    page = open_page(browser, f"{host.dashboard}#key={host.key}")
    page.fill("#run-filters [name=task]", scene["app"])
    page.click("#run-filters button[type=submit]")
    page.locator("#status").filter(has_text="0 runs shown").wait_for(timeout=10_000)
    page.evaluate("window.__sameDocument = true")  # gone if the page ever reloads

    push_base(scene["tmp"], scene["base"], "two")
    scene["pushed"] = True
    row = page.locator("#runs tbody tr").first
    row.wait_for(timeout=60_000)
    run_id = row.get_attribute("data-run-id")
    row.locator("button").click()  # open its log while it is queued or building
    log = page.locator("#run-log")
    status = page.locator(f'#runs tr[data-run-id="{run_id}"] td.status')
    status.filter(has_text=re.compile("Succeeded|Failed|Error|Timeout|Canceled")).wait_for(
        timeout=BUILD_SECONDS * 1000)
    assert status.inner_text() == "Succeeded", page.locator("#run-facts").inner_text()
    # the log view followed the build: buildah's own lines, the base's RUN, the push
    # (locator waits: the page's CSP forbids the eval that wait_for_function's polling uses)
    page.locator("#run-log", has_text="app-base-version").wait_for(timeout=20_000)
    text = log.inner_text()
    assert "buildah" in text and "/etc/base-version" in text
    assert page.evaluate("window.__sameDocument") is True
    assert page.locator("#run-facts").inner_text().count("Image Update") == 1
    screenshot(page, "runs")
    assert page.errors == []
    page.close()


def test_the_graph_shows_the_pushed_base_and_its_dependents(browser, host, scene):
    page = open_page(browser, f"{host.dashboard}#key={host.key}")
    page.click("#tab-graph")
    page.fill("#graph-form [name=image]", scene["base"])
    page.click("#graph-form button[type=submit]")
    # the tab first draws the whole graph; the impact replaces it, the changed image as its root
    page.locator(f'#graph g.node.image.root[data-id="{scene["base"]}"]').wait_for(timeout=10_000)
    assert page.locator(f'#graph g.node.task[data-task="{scene["app"]}"]').count() == 1
    tools = page.locator(f'#graph g.node.task[data-task="{scene["tools"]}"]')
    assert "off" in tools.get_attribute("class")  # a build-stage base under a Runtime trigger
    assert "1 of 2 dependent task(s) would rebuild" in page.locator("#graph-summary").inner_text()
    # coloured by the status of the task's newest run (the rebuild of the test before, if it ran)
    page.locator(f'#graph g.node.task[data-task="{scene["app"]}"][data-status]').wait_for(timeout=10_000)
    screenshot(page, "graph")
    page.click("#graph-all")
    page.locator(f'#graph g.node.task[data-task="{scene["tools"]}"]').wait_for(timeout=20_000)
    assert page.errors == []
    page.close()


def test_the_stale_and_decision_views(browser, host, scene):
    if not scene["pushed"]:  # this test alone: move the base as the push test does
        push_base(scene["tmp"], scene["base"], "two")
        scene["pushed"] = True
    page = open_page(browser, f"{host.dashboard}#key={host.key}")
    page.click("#tab-stale")
    page.locator("#stale-summary").filter(has_text="checked").wait_for(timeout=60_000)
    # tools was created on the first base, which the push replaced; a build stage under Runtime
    row = page.locator(f'#stale tr[data-task="{scene["tools"]}"]')
    assert "not-a-runtime-dependency" in row.inner_text()
    screenshot(page, "stale")
    page.click("#tab-decisions")
    page.fill("#decision-filters [name=image]", scene["base"])
    page.click("#decision-filters button[type=submit]")
    page.locator("#decisions tbody tr").first.wait_for(timeout=10_000)
    page.fill("#decision-filters [name=image]", "")
    page.fill("#decision-filters [name=task]", scene["tools"])
    page.click("#decision-filters button[type=submit]")
    page.locator("#decisions-caption", has_text=scene["tools"]).wait_for(timeout=10_000)
    # the task's own outcome for the push, not the decision's
    outcomes = page.locator("#decisions tbody td strong").all_inner_texts()
    assert outcomes[0] == "not-a-runtime-dependency", outcomes
    screenshot(page, "decisions")
    assert page.errors == []
    page.close()
