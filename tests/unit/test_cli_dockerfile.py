"""`basetrigger dockerfile deps`, called through cli.main.main as the console script does."""

import io
import json
import textwrap

import pytest

from cli.main import build_parser, command_modules, main

DOCKERFILE = textwrap.dedent("""\
    ARG V=3.20
    FROM --platform=$BUILDPLATFORM golang:1.22 AS build
    FROM build AS test
    FROM alpine:$V
""")

EXPECTED = {
    "stages": [
        {"base": "docker.io/library/golang:1.22", "alias": "build", "platform": "linux/amd64"},
        {"base": "build", "alias": "test", "platform": None},
        {"base": "docker.io/library/alpine:3.20", "alias": None, "platform": None},
    ],
    "runtime": ["docker.io/library/alpine:3.20"],
    "all": ["docker.io/library/golang:1.22", "docker.io/library/alpine:3.20"],
}


@pytest.fixture
def dockerfile(tmp_path):
    path = tmp_path / "Dockerfile"
    path.write_text(DOCKERFILE)
    return path


def run(capsys, *argv):
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_json_output_is_exactly_to_dict(capsys, dockerfile):
    status, out, err = run(capsys, "dockerfile", "deps", str(dockerfile), "--output", "json")
    assert status == 0
    assert err == ""
    assert json.loads(out) == EXPECTED
    assert out == json.dumps(EXPECTED, indent=2) + "\n"


def test_json_is_the_default(capsys, dockerfile):
    status, out, _ = run(capsys, "dockerfile", "deps", str(dockerfile))
    assert status == 0
    assert json.loads(out) == EXPECTED


def test_table_output(capsys, dockerfile):
    status, out, _ = run(capsys, "dockerfile", "deps", str(dockerfile), "-o", "table")
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == ["STAGE", "BASE", "ALIAS", "PLATFORM"]
    assert set(lines[1]) <= {"-", " "}
    assert lines[2].split() == ["0", "docker.io/library/golang:1.22", "build", "linux/amd64"]
    assert lines[3].split() == ["1", "build", "test"]
    assert lines[4].split() == ["2", "docker.io/library/alpine:3.20"]
    assert "runtime: docker.io/library/alpine:3.20" in lines
    assert "all: docker.io/library/golang:1.22, docker.io/library/alpine:3.20" in lines


def test_table_output_without_external_bases(capsys, tmp_path):
    path = tmp_path / "Dockerfile"
    path.write_text("FROM scratch\nCOPY app /\n")
    status, out, _ = run(capsys, "dockerfile", "deps", str(path), "--output", "table")
    assert status == 0
    assert "runtime: (none)" in out
    assert "all: (none)" in out


def test_build_args_and_platform(capsys, dockerfile):
    status, out, _ = run(
        capsys, "dockerfile", "deps", str(dockerfile),
        "--build-arg", "V=3.19", "--build-arg", "UNUSED=1", "--platform", "linux/arm64",
    )
    assert status == 0
    result = json.loads(out)
    assert result["runtime"] == ["docker.io/library/alpine:3.19"]
    assert result["stages"][0]["platform"] == "linux/arm64"


def test_build_arg_without_value_comes_from_the_environment(capsys, dockerfile, monkeypatch):
    monkeypatch.setenv("V", "edge")
    status, out, _ = run(capsys, "dockerfile", "deps", str(dockerfile), "--build-arg", "V")
    assert status == 0
    assert json.loads(out)["runtime"] == ["docker.io/library/alpine:edge"]

    monkeypatch.delenv("V")
    status, out, _ = run(capsys, "dockerfile", "deps", str(dockerfile), "--build-arg", "V")
    assert json.loads(out)["runtime"] == ["docker.io/library/alpine:3.20"]


def test_build_arg_value_may_contain_equals(capsys, tmp_path):
    path = tmp_path / "Dockerfile"
    path.write_text("ARG IMG\nFROM ${IMG}\n")
    status, _, err = run(capsys, "dockerfile", "deps", str(path), "--build-arg", "IMG=localhost:5000/a:b=c")
    # The value is passed whole (and "b=c" is not a valid tag).
    assert status == 2
    assert "'localhost:5000/a:b=c'" in err


def test_standard_input(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("FROM node\n"))
    status, out, _ = run(capsys, "dockerfile", "deps", "-")
    assert status == 0
    assert json.loads(out)["runtime"] == ["docker.io/library/node:latest"]


def test_invalid_reference_names_file_and_line(capsys, tmp_path):
    path = tmp_path / "Dockerfile"
    path.write_text("FROM node AS build\n\nFROM MyImage:1\n")
    status, out, err = run(capsys, "dockerfile", "deps", str(path))
    assert status == 2
    assert out == ""
    assert err.startswith(f"error: {path}:3: ")
    assert "'MyImage:1'" in err
    assert err.count("\n") == 1


def test_unparsable_dockerfile(capsys, tmp_path):
    path = tmp_path / "Dockerfile"
    path.write_text("FROM node\nFROM ${BROKEN\n")
    status, out, err = run(capsys, "dockerfile", "deps", str(path), "-o", "table")
    assert status == 2
    assert out == ""
    assert err.startswith(f"error: {path}:2: ")
    assert "missing '}'" in err


def test_file_level_error_has_no_line(capsys, tmp_path):
    path = tmp_path / "Dockerfile"
    path.write_text("ARG A=1\n")
    status, _, err = run(capsys, "dockerfile", "deps", str(path))
    assert status == 2
    assert err == f"error: {path}: Dockerfile has no FROM instruction\n"


def test_missing_file(capsys, tmp_path):
    missing = tmp_path / "nope" / "Dockerfile"
    status, out, err = run(capsys, "dockerfile", "deps", str(missing))
    assert status == 2
    assert out == ""
    assert err == f"error: cannot read Dockerfile {missing}: No such file or directory\n"


def test_directory_instead_of_file(capsys, tmp_path):
    status, _, err = run(capsys, "dockerfile", "deps", str(tmp_path))
    assert status == 2
    assert "cannot read Dockerfile" in err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["dockerfile"],
        ["dockerfile", "deps"],
        ["dockerfile", "deps", "Dockerfile", "--output", "yaml"],
        ["dockerfile", "deps", "Dockerfile", "--build-arg", "=x"],
        ["nosuchcommand"],
    ],
)
def test_usage_errors_exit_2(capsys, argv):
    status, out, err = run(capsys, *argv)
    assert status == 2
    assert "usage: basetrigger" in err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--help"], ["dockerfile", "<command>"]),
        (["dockerfile", "--help"], ["deps"]),
        (["dockerfile", "deps", "--help"],
         ["FILE", "--build-arg", "--output", "--platform", "runtime", "examples"]),
    ],
)
def test_help(capsys, argv, expected):
    status, out, _ = run(capsys, *argv)
    assert status == 0
    for text in expected:
        assert text in out


def test_version(capsys):
    status, out, _ = run(capsys, "--version")
    assert status == 0
    assert out.startswith("basetrigger ")


def test_command_groups_are_discovered_from_cmd_modules():
    assert "cli.dockerfile_cmd" in command_modules()
    parser = build_parser()
    args = parser.parse_args(["dockerfile", "deps", "x"])
    assert callable(args.func)
