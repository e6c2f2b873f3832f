"""The dashboard in a real headless Chromium (Debian's), against a host of this checkout on the real
stack: Azurite, the TLS registry, buildah. A base is pushed with buildah; the registry notifies the
stack, which queues the rebuild; the page, never reloaded, shows the run appear, follow its log and
finish, and draws the base and its dependents. A push starts a wave, which the Waves tab shows
appear and end; a broken base trips a wave's circuit breaker, and the tab's Cancel and Resume
(each asked first) decide.

With BASETRIGGER_SCREENSHOTS=DIR (`make screenshots`), the wave's base change is saved as
DIR/wave-change.png and the Latency tab as DIR/latency.png; the README's other pictures are
tests/browser/test_screenshots.py's story.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from pathlib import Path

import pytest

from shared.domain.vocabulary import status_words
from tests.conftest import stack_context_folder
from tests.integration.buildah_tools import buildah, push, push_base
from tests.own_host import chromium, own_host

BUILD_SECONDS = 240  # one buildah build of a busybox image, with room for a busy machine
APP_DOCKERFILE = "ARG BASE\nFROM ${BASE}\nRUN cat /etc/base-version > /app-base-version\n"
TOOLS_DOCKERFILE = ("ARG BASE\nFROM ${BASE} AS tools\nFROM scratch\n"
                    "COPY --from=tools /bin/busybox /bin/busybox\n")
SHOTS = os.environ.get("BASETRIGGER_SCREENSHOTS")
# Well over what can be released before the breaker trips: its first failures (3), and those
# finishing meanwhile, plus what one wave builds at once (BASETRIGGER_WAVE_MAX_RUNNING, 4 by
# default): when it trips, some have not been released, and are held.
BROKEN_DEPENDENTS = 16


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
    tmp = stack_context_folder("scene")
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


@pytest.fixture(scope="module")
def broken(host, tmp_path_factory):
    """A base and BROKEN_DEPENDENTS tasks whose build needs what the base has (a shell and
    /etc/base-version); `break_base` pushes a base without them, so every build fails."""
    tmp = stack_context_folder("broken")
    names = f"uib{uuid.uuid4().hex[:8]}"
    base = f"{os.environ.get('REGISTRY', 'localhost:5000')}/{names}/base:1"
    push_base(tmp, base, "one")
    api = host.api()
    context = tmp / "app"
    context.mkdir()
    (context / "Dockerfile").write_text(APP_DOCKERFILE)
    tasks = []
    for n in range(BROKEN_DEPENDENTS):
        created = api.post(f"{host.url}/api/tasks", timeout=60, json={
            "name": f"{names}-{n}", "images": [f"{names}/app{n}:{{{{.Run.ID}}}}"], "context": str(context),
            "build_args": {"BASE": base}})
        assert created.status_code == 201, created.text
        tasks.append(created.json()["name"])
    yield {"base": base, "tmp": tmp, "tasks": tasks}
    for name in tasks:
        api.delete(f"{host.url}/api/tasks/{name}", timeout=30)


def break_base(broken, version: str) -> str:
    """Push, as the base, an image with neither a shell nor /etc/base-version; its digest."""
    folder = broken["tmp"] / f"broken-{version}"
    folder.mkdir()
    (folder / "version").write_text(version)
    (folder / "Dockerfile").write_text(f"FROM scratch\nCOPY version /broken-{version}\n")
    buildah("bud", "--isolation", "chroot", "--layers=false", "-t", broken["base"], str(folder))
    return push(broken["base"], broken["tmp"])


def wave_when(host, wave_id: str, condition, timeout: float = BUILD_SECONDS) -> dict:
    """The wave (as the API has it, with its members) once `condition(wave)` holds."""
    deadline = time.monotonic() + timeout
    while True:
        wave = host.api().get(f"{host.url}/api/waves/{wave_id}", timeout=30).json()
        if condition(wave) or time.monotonic() > deadline:
            assert condition(wave), wave
            return wave
        time.sleep(1)


def held_or_done(wave: dict) -> bool:
    """Done, or Held for good: members held, and no released run still to end (which could end the
    wave, or trip the breaker again)."""
    members = wave["members"]
    return wave["state"] == "Done" or (
        wave["state"] == "Held" and all(m["outcome"] for m in members if m["released"])
        and any(not m["released"] and not m["outcome"] for m in members))


def open_waves(browser, host):
    """The page on the Waves tab, its list loaded, marked so that a reload would show."""
    page = open_page(browser, f"{host.dashboard}#key={host.key}")
    page.locator("#status").filter(has_text="runs shown").wait_for(timeout=10_000)
    page.click("#tab-waves")
    page.locator("#status").filter(has_text="waves shown").wait_for(timeout=10_000)
    page.evaluate("window.__sameDocument = true")  # gone if the page ever reloads
    return page


def wave_row(page, root: str):
    """The row of the wave that `root` (`<base>@<digest>`) started, once the page shows it."""
    row = page.locator(f'#waves tbody tr[data-root="{root}"]')
    row.wait_for(timeout=120_000)
    return row


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
    # The status filter offers the app's own words (vocabulary.json), each once.
    options = page.locator("#run-filters [name=status] option").all_inner_texts()
    assert options == ["any", *status_words()["runStatuses"]]
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
    assert page.evaluate("document.activeElement.id") == "tab-waves"
    assert page.locator("#view-waves").is_visible()
    page.locator("#status").filter(has_text="waves shown").wait_for(timeout=10_000)
    # a visible focus ring: the focused tab's outline is drawn
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("", "none")
    # Tab leaves the tab list for the view's own controls
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.closest('#view-waves') !== null")
    assert page.errors == []
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
    page.locator("#run-facts .badge", has_text="Succeeded").wait_for(timeout=10_000)  # the facts caught up
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
    assert page.errors == []
    page.close()


def test_a_base_push_starts_a_wave_that_ends_without_a_reload(browser, host, scene):
    page = open_waves(browser, host)
    digest = push_base(scene["tmp"], scene["base"], "three")
    scene["pushed"] = True
    row = wave_row(page, f"{scene['base']}@{digest}")
    wave_id = row.get_attribute("data-wave-id")
    # opened with the keyboard; the detail lists the members by level, each with its run
    row.locator("button").focus()
    page.keyboard.press("Enter")
    member = page.locator(f'#wave-members section[data-level="1"] tr[data-task="{scene["app"]}"]')
    member.wait_for(timeout=10_000)
    assert page.locator("#wave-title").inner_text().startswith(f"Wave {wave_id}")
    # tools' base is a build stage under a Runtime trigger: not a member
    assert page.locator(f'#wave-members tr[data-task="{scene["tools"]}"]').count() == 0
    done = page.locator(f'#waves tr[data-wave-id="{wave_id}"][data-state="Done"]')
    done.wait_for(timeout=BUILD_SECONDS * 1000)
    assert "1/1 ended" in row.inner_text() and "1 Succeeded" in row.inner_text()
    # the detail follows it to its end too (one render: its state, buttons and members)
    page.locator("#wave-title .badge", has_text="Done").wait_for(timeout=20_000)
    assert member.get_attribute("data-status") == "Succeeded"
    assert page.locator("#wave-cancel").is_hidden() and page.locator("#wave-resume").is_hidden()
    assert page.evaluate("window.__sameDocument") is True
    # the member's run links to the run and its log
    run_id = member.get_attribute("data-run-id")
    member.locator("button").click()
    assert page.locator("#view-runs").is_visible()
    assert page.locator("#run-title").inner_text() == f"Run {run_id}"
    page.locator("#run-log", has_text="app-base-version").wait_for(timeout=20_000)
    page.locator("#run-facts").filter(has_text=wave_id).wait_for(timeout=10_000)
    assert page.errors == []
    page.close()


def test_a_held_wave_is_shown_and_canceled_with_a_confirm(browser, host, broken):
    page = open_waves(browser, host)
    row = wave_row(page, f"{broken['base']}@{break_base(broken, 'a')}")
    wave_id = row.get_attribute("data-wave-id")
    row.locator("button").click()
    # the breaker holds it: the first builds failed, what was not released yet is held
    page.locator(f'#waves tr[data-wave-id="{wave_id}"][data-state="Held"]').wait_for(
        timeout=BUILD_SECONDS * 1000)
    page.locator('#wave-members tr[data-status="Held"]').first.wait_for(timeout=20_000)
    assert page.locator('#wave-members tr[data-status="Failed"]').count() >= 3
    assert "circuit breaker" in page.locator("#wave-facts").inner_text()
    assert "Held" in row.locator(".progress").inner_text()
    cancel, resume = page.locator("#wave-cancel"), page.locator("#wave-resume")
    assert cancel.is_visible() and resume.is_visible()

    # the graph draws the wave's tasks by their status in it
    page.click("#wave-graph")
    page.locator(f'#graph g.node.image.root[data-id="{broken["base"]}"]').wait_for(timeout=10_000)
    page.locator(f'#graph g.node.task.in-wave[data-wave="{wave_id}"][data-status="Held"]').first.wait_for(
        timeout=10_000)
    assert page.locator(f'#graph g.node.task.in-wave[data-wave="{wave_id}"]').count() == BROKEN_DEPENDENTS
    assert wave_id in page.locator("#graph-wave").inner_text()
    page.click("#tab-waves")

    # asked first: Escape keeps the wave as it is
    cancel.wait_for(timeout=10_000)
    cancel.focus()
    page.keyboard.press("Enter")
    dialog = page.locator("#wave-confirm")
    assert dialog.is_visible() and f"Cancel wave {wave_id}?" in dialog.inner_text()
    assert page.evaluate("document.activeElement.id") == "wave-confirm-no"
    page.keyboard.press("Escape")
    page.locator("#wave-cancel:focus").wait_for(timeout=5_000)  # focus back where it was
    assert dialog.is_hidden()
    assert host.api().get(f"{host.url}/api/waves/{wave_id}", timeout=30).json()["state"] == "Held"
    # confirmed: canceled, and what was held with it
    cancel.click()
    with page.expect_response(lambda r: r.url.endswith(f"/api/waves/{wave_id}/cancel")) as answer:
        page.click("#wave-confirm-yes")
    assert answer.value.status == 200 and answer.value.json()["state"] == "Canceled"
    page.locator(f'#waves tr[data-wave-id="{wave_id}"][data-state="Canceled"]').wait_for(timeout=10_000)
    page.locator("#wave-title .badge", has_text="Canceled").wait_for(timeout=10_000)
    assert page.locator('#wave-members tr[data-status="Canceled"]').count() >= 1
    assert page.locator('#wave-members tr[data-status="Held"]').count() == 0
    assert cancel.is_hidden() and resume.is_hidden()
    members = host.api().get(f"{host.url}/api/waves/{wave_id}", timeout=30).json()["members"]
    runs = [host.api().get(f"{host.url}/api/runs/{m['run_id']}", timeout=30).json() for m in members]
    assert "Held" not in {r["status"] for r in runs}
    assert page.evaluate("window.__sameDocument") is True and page.errors == []
    page.close()


def test_a_held_wave_resumed_from_the_page_runs_to_its_end(browser, host, broken):
    page = open_waves(browser, host)
    row = wave_row(page, f"{broken['base']}@{break_base(broken, 'b')}")
    wave_id = row.get_attribute("data-wave-id")
    row.locator("button").click()
    wave = wave_when(host, wave_id, held_or_done)
    assert wave["state"] == "Held", wave
    resume = page.locator("#wave-resume")
    # Each resume lets the held runs build; they fail too, and the breaker (counting afresh from
    # each resume) may hold the wave again: resumed until every member has ended.
    for _ in range(BROKEN_DEPENDENTS):
        if wave["state"] == "Done":
            break
        resume.wait_for(timeout=20_000)  # the detail shows the wave Held
        resume.click()
        assert "Resume the wave" in page.locator("#wave-confirm").inner_text()
        page.keyboard.press("Tab")  # from "Keep it as it is" to the confirm button
        assert page.evaluate("document.activeElement.id") == "wave-confirm-yes"
        with page.expect_response(lambda r: r.url.endswith(f"/api/waves/{wave_id}/resume")) as answer:
            page.keyboard.press("Enter")
        assert answer.value.status == 200 and answer.value.json()["state"] == "Active", answer.value.text()
        wave = wave_when(host, wave_id, held_or_done)
    assert wave["state"] == "Done"
    page.locator(f'#waves tr[data-wave-id="{wave_id}"][data-state="Done"]').wait_for(timeout=10_000)
    page.locator("#wave-title .badge", has_text="Done").wait_for(timeout=20_000)
    statuses = page.locator("#wave-members tr[data-task]")
    assert statuses.count() == BROKEN_DEPENDENTS
    assert {statuses.nth(n).get_attribute("data-status") for n in range(BROKEN_DEPENDENTS)} == {"Failed"}
    assert {m["outcome"] for m in wave["members"]} == {"Failed"}
    assert resume.is_hidden() and page.locator("#wave-cancel").is_hidden()
    assert page.evaluate("window.__sameDocument") is True and page.errors == []
    page.close()


def _duration(seconds: float | None) -> str:
    """The page's formatDuration: HH:MM:SS, rounded to the second."""
    if seconds is None:
        return "—"
    whole = int(seconds + 0.5)
    return f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def test_the_latency_tab_charts_what_the_api_reports(browser, host, scene):
    """A base push rebuilds its dependent; the Latency tab draws its wave as a bar of the latency the
    API reports, within the SLO, and a tighter SLO turns it red; the figures per base match the API's;
    a bad SLO says why."""
    digest = push_base(scene["tmp"], scene["base"], "latency")
    scene["pushed"] = True
    root = f"{scene['base']}@{digest}"
    api = host.api()
    deadline = time.monotonic() + BUILD_SECONDS
    wave = None
    while wave is None and time.monotonic() < deadline:
        waves = api.get(f"{host.url}/api/waves", params={"top": 30}, timeout=30).json()["waves"]
        wave = next((w for w in waves if w["root"] == root and w["state"] == "Done"), None)
        if wave is None:
            time.sleep(1)
    assert wave is not None, f"the wave of {root} did not end"
    report = api.get(f"{host.url}/api/bases/latency", params={"since": "24h"}, timeout=120).json()
    (event,) = [e for e in report["events"] if e["wave_id"] == wave["wave_id"]]
    (figures,) = [b for b in report["bases"] if b["base"] == scene["base"]]

    page = open_page(browser, f"{host.dashboard}#key={host.key}")
    page.locator("#status").filter(has_text="runs shown").wait_for(timeout=10_000)
    page.click("#tab-latency")
    page.select_option("#latency-form [name=since]", "24h")
    # Asked while the tab's first answer (7 days) may still be on its way: the 24 hours are drawn.
    page.click("#latency-form button[type=submit]")
    page.locator("#latency-summary", has_text="in the last 24:00:00").wait_for(timeout=60_000)
    bar = page.locator(f'#latency-chart rect[data-wave-id="{wave["wave_id"]}"]')
    bar.wait_for(timeout=60_000)
    assert float(bar.get_attribute("data-seconds")) == event["exposure_seconds"] == event["latency_seconds"]
    assert bar.get_attribute("data-state") == "Succeeded"  # a busybox build is well within 12 hours
    row = page.locator(f'#latency-figures tr[data-base="{scene["base"]}"]')
    cells = [row.locator(f"td.{name}").inner_text() for name in ("p50", "p95", "worst", "missed")]
    assert cells == [_duration(figures["p50_seconds"]), _duration(figures["p95_seconds"]),
                     _duration(figures["worst_seconds"]), str(figures["missed_slo"])]
    assert page.locator("#latency-chart line.slo").count() == 1
    screenshot(page, "latency")

    # No build is that quick: the bar turns red, and the task is listed as late.
    page.fill("#latency-form [name=slo]", "1s")
    page.click("#latency-form button[type=submit]")
    late = f'#latency-chart rect[data-wave-id="{wave["wave_id"]}"][data-state="Failed"]'
    page.locator(late).wait_for(timeout=60_000)
    missed = page.locator(f'#latency-missed tr[data-task="{scene["app"]}"]', has_text="late")
    missed.first.wait_for(timeout=10_000)

    page.fill("#latency-form [name=slo]", "12 hours")
    page.click("#latency-form button[type=submit]")
    page.locator("#status.error", has_text="is not a duration").wait_for(timeout=30_000)
    assert page.errors == []
    page.close()


def test_the_wave_view_shows_what_the_base_push_changed(browser, host):
    """A base whose push upgrades a package: the wave's detail says so once its first worker has
    read the change (saved as DIR/wave-change.png with BASETRIGGER_SCREENSHOTS)."""
    from tests.integration.test_base_changes import DEBIAN_12, DPKG_V1, DPKG_V2, build_base

    tmp = stack_context_folder("change")
    # readable in wave-change.png; the short suffix keeps reruns on the stack's tables apart
    suffix = uuid.uuid4().hex[:4]
    task = f"app-{suffix}"
    base = f"{os.environ.get('REGISTRY', 'localhost:5000')}/library/debian:12-{suffix}"
    build_base(tmp, base, {"/var/lib/dpkg/status": DPKG_V1, "/etc/os-release": DEBIAN_12})
    context = tmp / "app"
    context.mkdir()
    (context / "Dockerfile").write_text("ARG BASE\nFROM ${BASE}\nCOPY Dockerfile /app.Dockerfile\n")
    api = host.api()
    created = api.post(f"{host.url}/api/tasks", timeout=60, json={
        "name": task, "images": [f"{task}:{{{{.Run.ID}}}}"], "context": str(context),
        "build_args": {"BASE": base}})
    assert created.status_code == 201, created.text
    try:
        page = open_waves(browser, host)
        digest = build_base(tmp, base, {"/var/lib/dpkg/status": DPKG_V2, "/etc/os-release": DEBIAN_12})
        row = wave_row(page, f"{base}@{digest}")
        row.locator("button").click()
        facts = page.locator("#wave-facts")
        facts.locator(".base-change", has_text="packages").wait_for(timeout=BUILD_SECONDS * 1000)
        text = facts.inner_text()
        assert "Base change" in text and "bash 5.2.15-2 -> 5.2.21-1" in text
        wave_id = row.get_attribute("data-wave-id")
        page.locator(f'#waves tr[data-wave-id="{wave_id}"][data-state="Done"]').wait_for(
            timeout=BUILD_SECONDS * 1000)
        page.locator("#wave-title .badge", has_text="Done").wait_for(timeout=20_000)
        screenshot(page, "wave-change")
        assert page.errors == []
        page.close()
    finally:
        api.delete(f"{host.url}/api/tasks/{task}", timeout=30)
        buildah("rmi", "-f", base)
