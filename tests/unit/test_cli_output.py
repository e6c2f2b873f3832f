"""The CLI's output formats: list-runs as `az acr task list-runs --output table`, and the helpers."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from cli import build_cmd, client, output
from cli.main import main

# The list-runs table of ACR's tutorial (docs/tutorial.md, "The same table as `az`"), character for character.
TUTORIAL_TABLE = """\
RUN ID    TASK            PLATFORM    STATUS     TRIGGER     STARTED               DURATION
--------  --------------  ----------  ---------  ----------  --------------------  ----------
da6       taskhelloworld  Linux       Succeeded  Manual      2018-09-17T23:07:22Z  00:00:38
da5                       Linux       Succeeded  Manual      2018-09-17T23:06:33Z  00:00:31
da4       taskhelloworld  Linux       Succeeded  Git Commit  2018-09-17T23:03:45Z  00:00:44"""


def api_run(run_id, task, status, trigger, started, seconds, platform="Linux"):
    """A Run as the API answers it (docs/api.md)."""
    return {
        "run_id": run_id, "status": status, "trigger": trigger, "task": task, "platform": platform,
        "cause": None, "event_id": None, "created_at": started, "started_at": started,
        "finished_at": None, "heartbeat_at": None, "duration_seconds": seconds, "output_images": [],
        "output_digest": None, "base_digests": {}, "reason": None, "attempt": 1, "force": False,
    }


TUTORIAL_RUNS = [
    api_run("da6", "taskhelloworld", "Succeeded", "Manual", "2018-09-17T23:07:22.417311Z", 38.6),
    api_run("da5", None, "Succeeded", "Manual", "2018-09-17T23:06:33Z", 31.0),
    api_run("da4", "taskhelloworld", "Succeeded", "Git Commit", "2018-09-17T23:03:45.000001+00:00", 44.2),
]


def test_runs_table_is_the_tutorials_table():
    assert output.runs_table(TUTORIAL_RUNS) == TUTORIAL_TABLE


def test_runs_table_layout_rules():
    text = output.runs_table(TUTORIAL_RUNS)
    header, rule, *rows = text.splitlines()
    assert header.split("  ")[0] == "RUN ID"
    # Each dashed segment is as wide as its column, two spaces between columns.
    widths = [len(part) for part in rule.split("  ")]
    assert set(rule.replace("  ", "")) == {"-"}
    assert len(widths) == len(output.RUN_COLUMNS)
    starts = [0]
    for width in widths[:-1]:
        starts.append(starts[-1] + width + 2)
    for name, start in zip(output.RUN_COLUMNS, starts, strict=True):
        assert header[start:].startswith(name)
    assert rows[1][starts[1]:starts[2]].strip() == ""  # quick build: empty TASK
    assert all(line == line.rstrip() for line in text.splitlines())


def test_image_update_row_on_top_like_step_7():
    runs = [
        api_run("da8", "taskhelloworld", "Succeeded", "Image Update", "2018-09-17T23:11:50Z", 33),
        api_run("da7", None, "Succeeded", "Manual", "2018-09-17T23:11:27Z", 35),
    ]
    # Step 7 of docs/tutorial.md: the Image Update run on top of the base's quick build.
    assert output.runs_table(runs) == """\
RUN ID    TASK            PLATFORM    STATUS     TRIGGER       STARTED               DURATION
--------  --------------  ----------  ---------  ------------  --------------------  ----------
da8       taskhelloworld  Linux       Succeeded  Image Update  2018-09-17T23:11:50Z  00:00:33
da7                       Linux       Succeeded  Manual        2018-09-17T23:11:27Z  00:00:35"""


def test_queued_run_has_no_start_nor_duration():
    queued = api_run("da9", "taskhelloworld", "Queued", "Image Update", None, None)
    lines = output.runs_table([queued]).splitlines()
    assert lines[2].split() == ["da9", "taskhelloworld", "Linux", "Queued", "Image", "Update"]


def test_empty_list_is_a_header_and_rule():
    assert output.runs_table([]).splitlines() == [
        "RUN ID    TASK    PLATFORM    STATUS    TRIGGER    STARTED    DURATION",
        "--------  ------  ----------  --------  ---------  ---------  ----------",
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2018-09-17T23:07:22Z", "2018-09-17T23:07:22Z"),
        ("2018-09-17T23:07:22.987654Z", "2018-09-17T23:07:22Z"),
        ("2018-09-18T01:07:22+02:00", "2018-09-17T23:07:22Z"),
        ("2018-09-17T23:07:22", "2018-09-17T23:07:22Z"),
        (None, ""),
        ("not a time", ""),
    ],
)
def test_format_time(value, expected):
    assert output.format_time(value) == expected


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(38.9, "00:00:38"), (0, "00:00:00"), (3599, "00:59:59"), (3600 * 26 + 61, "26:01:01"), (None, "")],
)
def test_format_duration(seconds, expected):
    assert output.format_duration(seconds) == expected


def test_duration_from_finish_when_the_api_gives_none():
    run = api_run("da3", None, "Failed", "Manual", "2018-09-17T23:00:00Z", None)
    run["finished_at"] = "2018-09-17T23:01:05Z"
    assert output.run_row(run)[-1] == "00:01:05"


def test_tasks_table():
    task = {"name": "taskhelloworld", "platform": "linux", "context": "/src/helloworld", "branch": None,
            "base_image_trigger": {"enabled": True, "type": "Runtime"}}
    assert output.tasks_table([task]).splitlines() == [
        "NAME            PLATFORM    STATUS    CONTEXT          TRIGGERS",
        "--------------  ----------  --------  ---------------  --------------------",
        "taskhelloworld  Linux       Enabled   /src/helloworld  BASE_IMAGE (Runtime)",
    ]


# ---- the build context -----------------------------------------------------------------------------


def test_dockerignore_rules():
    ignore = build_cmd.DockerIgnore("# comment\n\nnode_modules\n*.log\n/docs/**\n!docs/keep.md\n**/tmp\n")
    assert ignore.excluded("node_modules")
    assert ignore.excluded("node_modules/a/b.js")
    assert ignore.excluded("build.log")
    assert not ignore.excluded("src/build.log")  # `*` does not cross folders
    assert ignore.excluded("docs/a/b.md")
    assert not ignore.excluded("docs/keep.md")
    assert ignore.excluded("a/b/tmp/x")
    assert not ignore.excluded("Dockerfile")


def test_pack_context_honours_dockerignore(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "app.sh").write_text("echo hi\n")
    (tmp_path / "secret.env").write_text("X=1\n")
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "big").write_text("x" * 100)
    (tmp_path / ".dockerignore").write_text("secret.env\ncache\nDockerfile\n")
    archive, count = build_cmd.pack_context(tmp_path, "Dockerfile")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        names = sorted(tar.getnames())
    # The Dockerfile and .dockerignore are sent even when ignored, as docker does.
    assert names == [".dockerignore", "Dockerfile", "app.sh"]
    assert count == 3


def test_resolve_dockerfile(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "Dockerfile-app").write_text("FROM scratch\n")
    (tmp_path / "outside").write_text("FROM scratch\n")
    assert build_cmd.resolve_dockerfile(tmp_path, "sub/Dockerfile-app") == "sub/Dockerfile-app"
    monkeypatch.chdir(tmp_path / "sub")
    assert build_cmd.resolve_dockerfile(tmp_path, "Dockerfile-app") == "sub/Dockerfile-app"
    with pytest.raises(build_cmd.ContextError, match="outside the context"):
        build_cmd.resolve_dockerfile(tmp_path / "sub", "../outside")
    with pytest.raises(build_cmd.ContextError, match="no Dockerfile"):
        build_cmd.resolve_dockerfile(tmp_path, "nope")


# ---- the client's errors ---------------------------------------------------------------------------


class FakeResponse:
    def __init__(self, status, body=None, text="", headers=None, content=None):
        self.status_code = status
        self._body = body
        self.text = text if body is None else json.dumps(body)
        self.content = content if content is not None else self.text.encode()
        self.headers = headers or {}

    def json(self):
        if self._body is None:
            raise ValueError("not json")
        return self._body


class FakeSession:
    def __init__(self, *responses):
        self.responses = list(responses)
        self.calls = []

    def request(self, method, url, **kwargs):
        self.calls.append((method, url, kwargs))
        answer = self.responses.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_api_error_is_the_apis_message():
    session = FakeSession(FakeResponse(404, {"error": {"code": "NotFound", "message": "no task 'x'"}}))
    api = client.Client("http://h:1/api/", "s3cret-key", session=session)
    with pytest.raises(client.ApiError) as caught:
        api.get_task("x")
    assert str(caught.value) == "no task 'x'"
    assert caught.value.status == 404 and caught.value.code == "NotFound"
    method, url, kwargs = session.calls[0]
    assert url == "http://h:1/api/tasks/x"
    assert kwargs["headers"]["x-functions-key"] == "s3cret-key"
    assert "s3cret-key" not in repr(api)


def test_connection_refused_says_make_up():
    import requests

    api = client.Client("http://127.0.0.1:9", "k", session=FakeSession(requests.ConnectionError("refused")))
    with pytest.raises(client.ApiError) as caught:
        api.list_tasks()
    assert str(caught.value) == "cannot reach basetrigger at http://127.0.0.1:9: is the stack up? (`make up`)"


def test_refused_key_never_shows_it():
    api = client.Client("http://h", "s3cret-key", session=FakeSession(FakeResponse(401, text="")))
    with pytest.raises(client.ApiError) as caught:
        api.list_tasks()
    assert "401" in str(caught.value) and "s3cret-key" not in str(caught.value)


def test_missing_url_is_one_clear_line(monkeypatch, capsys):
    monkeypatch.delenv(client.URL_ENV, raising=False)
    assert main(["task", "list"]) == client.EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("error: no basetrigger URL: pass --url or set BASETRIGGER_URL")
    assert len(err.strip().splitlines()) == 1


def test_follow_run_streams_until_terminal_and_reads_the_rest():
    logs = [
        FakeResponse(200, text="", headers={"x-log-offset": "0", "x-run-status": "Queued"}),
        FakeResponse(200, text="step 1\n", headers={"x-log-offset": "7", "x-run-status": "Running"}),
        FakeResponse(200, text="step 2\n", headers={"x-log-offset": "14", "x-run-status": "Succeeded"}),
        FakeResponse(200, text="done\n", headers={"x-log-offset": "19", "x-run-status": "Succeeded"}),
        FakeResponse(200, text="", headers={"x-log-offset": "19", "x-run-status": "Succeeded"}),
        FakeResponse(200, {"run_id": "da5", "status": "Succeeded", "duration_seconds": 3}),
    ]
    session = FakeSession(*logs)
    out, err = io.StringIO(), io.StringIO()
    run = client.follow_run(client.Client("http://h", "k", session=session), "da5", out=out, err=err,
                            sleep=lambda _: None)
    assert out.getvalue() == "step 1\nstep 2\ndone\n"
    assert "waiting for a worker" in err.getvalue()
    offsets = [kw["params"]["offset"] for _, url, kw in session.calls if url.endswith("/log")]
    assert offsets == [0, 0, 7, 14, 19]
    assert run["status"] == "Succeeded"
    assert client.report_end(run, out=out, err=err) == client.EXIT_OK


def test_report_end_of_a_failed_run():
    err = io.StringIO()
    status = client.report_end({"run_id": "da5", "status": "Failed", "reason": "buildah bud exited with 1"},
                               out=io.StringIO(), err=err)
    assert status == client.EXIT_RUN_FAILED
    assert err.getvalue() == "run da5 Failed: buildah bud exited with 1\n"


@pytest.mark.parametrize("form", ["json", "table"])
def test_task_show_prints_the_tasks_warnings_on_stderr(capsys, form):
    from cli.task_cmd import _print_tasks

    task = {"name": "app", "platform": "linux", "context": "/src", "branch": None,
            "base_image_trigger": {"enabled": True, "type": "Runtime"}, "warnings": ["secret arg KEY ..."]}
    _print_tasks([task], form, single=True)
    printed = capsys.readouterr()
    assert printed.err == "warning: task app: secret arg KEY ...\n"
    if form == "json":
        assert json.loads(printed.out)["warnings"] == ["secret arg KEY ..."]
