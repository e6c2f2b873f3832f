"""`task create|update --update-trigger-endpoint URL --update-trigger-secret-file FILE`: the secret
is read from a file or stdin (never an option value on a command line) and sent with the endpoint;
'' removes the endpoint."""

from __future__ import annotations

import io

from cli.main import build_parser
from cli.task_cmd import _spec


def spec_of(*argv: str) -> dict:
    return _spec(build_parser().parse_args(["task", *argv]))


def test_the_endpoint_and_the_secret_from_a_file_go_with_the_task(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t-value\n")
    spec = spec_of("update", "--name", "app", "--update-trigger-endpoint", "https://hooks.example.com/b",
                   "--update-trigger-secret-file", str(secret))
    assert spec == {"update_trigger_endpoint": "https://hooks.example.com/b",
                    "update_trigger_secret": "s3cr3t-value"}


def test_the_secret_can_come_from_stdin_and_an_empty_endpoint_removes_it(monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("from-stdin\n"))
    assert spec_of("update", "--name", "app", "--update-trigger-secret-file", "-") == {
        "update_trigger_secret": "from-stdin"}
    assert spec_of("update", "--name", "app", "--update-trigger-endpoint", "") == {
        "update_trigger_endpoint": None}
