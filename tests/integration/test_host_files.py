"""The files of the machine that builds are not readable through the API (issue 21, item 2).

A directory context is read in place only under BASETRIGGER_LOCAL_CONTEXT_ROOTS (the local stack:
its examples); everything else is an uploaded archive or a git URL. Through the running host, tasks
point at the stack's own secrets by every road (the folder itself, `/`, `..` out of a root, symlinks
inside a root): each is refused with a 4xx that quotes no byte of the file.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

PROJECT = Path(__file__).resolve().parents[2]
EXAMPLES = PROJECT / "examples"


@pytest.fixture(scope="module")
def api():
    key = {"x-functions-key": os.environ["BASETRIGGER_KEY"]}

    def call(method, path, **kwargs):
        return requests.request(method, f"{os.environ['BASETRIGGER_URL']}/api{path}", headers=key,
                                timeout=60, **kwargs)

    return call


def _secret_files() -> dict[Path, list[str]]:
    """Each secret file, with what must never appear in an answer: distinctive text of the file."""
    stack = Path(os.environ["STACK_DIR"]).resolve()
    function_key = os.environ["BASETRIGGER_KEY"]
    fernet_key = (stack / "secret.key").read_text().strip()
    password = (stack / "auth-registry" / "password").read_text().strip()
    # The host reads its own /proc/self/environ: every NAME=value of it.
    host_pid = (stack / "pids" / "host.pid").read_text().strip()
    environ = Path(f"/proc/{host_pid}/environ").read_bytes().decode(errors="replace").split("\0")
    return {
        stack / "devhost.key": [function_key],
        stack / "secret.key": [fernet_key],
        stack / "auth-registry" / "password": [password],
        Path("/etc/passwd"): ["root:x:0:0", "/bin/"],
        Path("/proc/self/environ"): [function_key, fernet_key, *filter(None, environ)],
    }


SECRETS = _secret_files() if os.environ.get("STACK_DIR") and os.environ.get("BASETRIGGER_KEY") else {}


@pytest.fixture(scope="module")
def inside_a_root() -> Iterator[Path]:
    """A folder under the stack's root (examples/) holding symlinks that point out of it."""
    folder = EXAMPLES / f".test-host-files-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    try:
        for n, path in enumerate(SECRETS):
            (folder / f"link{n}").symlink_to(path)  # a Dockerfile that is a link to the secret
            (folder / f"dir{n}").symlink_to(path.parent, target_is_directory=True)  # a context
        yield folder
    finally:
        shutil.rmtree(folder)


def _roads(path: Path, n: int, inside: Path) -> list[tuple[str, str]]:
    """(context, dockerfile) pairs that all lead to `path`."""
    return [
        (str(path.parent), path.name),
        ("/", str(path)[1:]),
        (str(EXAMPLES), os.path.relpath(path, EXAMPLES)),  # `..` out of an allowed context
        (f"{EXAMPLES}/{os.path.relpath(path.parent, EXAMPLES)}", path.name),  # `..` in the context
        (str(inside), f"link{n}"),  # a symlink inside an allowed context
        (f"{inside}/dir{n}", path.name),  # a context that is a symlink out of the root
        (f"{os.environ['STACK_CONTEXTS']}/..", os.path.relpath(path, os.environ["STACK_DIR"])),
    ]


@pytest.mark.parametrize("path", list(SECRETS), ids=[p.name for p in SECRETS])
def test_task_create_never_reads_or_quotes_a_file_outside_the_roots(api, inside_a_root, path):
    n = list(SECRETS).index(path)
    for context, dockerfile in _roads(path, n, inside_a_root):
        name = f"leak-{uuid.uuid4().hex[:8]}"
        answer = api("POST", "/tasks", json={"name": name, "images": ["leak:1"], "context": context,
                                             "dockerfile": dockerfile})
        if answer.status_code < 300:
            api("DELETE", f"/tasks/{name}")
        assert 400 <= answer.status_code < 500, (context, dockerfile, answer.status_code, answer.text[:300])
        for text in SECRETS[path]:
            for form in (text, text.upper()):
                assert form not in answer.text, (context, dockerfile, answer.text[:300])


@pytest.fixture
def outside(tmp_path_factory) -> Path:
    """A folder outside the host's roots (tmp_path is under the stack's contexts root here)."""
    return tmp_path_factory.mktemp("outside")


def test_a_context_outside_the_roots_is_refused_with_how_to_send_it(api, outside):
    (outside / "Dockerfile").write_text("FROM scratch\n")
    answer = api("POST", "/tasks", json={"name": f"out-{uuid.uuid4().hex[:8]}", "images": ["out:1"],
                                         "context": str(outside)})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "ContextUploadNeeded"
    assert "context_archive" in error["message"] and "BASETRIGGER_LOCAL_CONTEXT_ROOTS" in error["message"]


def _archive(files: dict[str, bytes]) -> str:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return base64.b64encode(buffer.getvalue()).decode()


def test_the_same_folder_sent_as_an_archive_is_built_from_the_archive(api, outside):
    name = f"sent-{uuid.uuid4().hex[:8]}"
    answer = api("POST", "/tasks", json={"name": name, "images": ["sent:1"], "context": str(outside),
                                         "context_archive": _archive({"Dockerfile": b"FROM scratch\n"})})
    try:
        assert answer.status_code == 201, answer.text
        assert answer.json()["context_upload"]
    finally:
        api("DELETE", f"/tasks/{name}")


def test_an_uploaded_dockerfile_error_names_the_line_and_the_instruction(api, outside):
    answer = api("POST", "/tasks", json={
        "name": f"typo-{uuid.uuid4().hex[:8]}", "images": ["typo:1"], "context": str(outside),
        "context_archive": _archive({"Dockerfile": b"FROM scratch\nCOPY a /a\nFORM b\n"})})
    assert answer.status_code == 400, answer.text
    assert "line 3: unknown instruction: FORM" in answer.json()["error"]["message"]


def test_a_directory_under_the_roots_is_still_read_in_place(api):
    name = f"inplace-{uuid.uuid4().hex[:8]}"
    answer = api("POST", "/tasks", json={
        "name": name, "images": ["inplace:1"], "context": str(EXAMPLES / "helloworld"),
        "dockerfile": "Dockerfile-app", "build_args": {"REGISTRY_NAME": os.environ["REGISTRY"]}})
    try:
        assert answer.status_code == 201, answer.text
        assert answer.json()["context_upload"] is None  # read at each run, not uploaded
    finally:
        api("DELETE", f"/tasks/{name}")


def test_a_run_reads_a_directory_only_while_it_is_under_the_roots(tmp_path):
    # A task saved while its folder was under a root, built after the root was taken away: the run
    # checks again (it reads the task's context at each run), and its error quotes nothing.
    from shared.bootstrap import Services
    from shared.domain.builds import BuildSpec, ContextNotReadInPlace, Source
    from tests.conftest import unique_settings

    context = tmp_path / "app"
    context.mkdir()
    spec = BuildSpec(source=Source(directory=str(context)))
    allowed = Services(unique_settings(BASETRIGGER_LOCAL_CONTEXT_ROOTS=str(tmp_path)))
    assert allowed.sources.checkout(spec, tmp_path / "work") == context.resolve()
    elsewhere = Services(unique_settings(BASETRIGGER_LOCAL_CONTEXT_ROOTS=str(EXAMPLES)))
    with pytest.raises(ContextNotReadInPlace, match="BASETRIGGER_LOCAL_CONTEXT_ROOTS"):
        elsewhere.sources.checkout(spec, tmp_path / "work")
    none = Services(unique_settings(BASETRIGGER_LOCAL_CONTEXT_ROOTS=""))
    with pytest.raises(ContextNotReadInPlace):
        none.sources.checkout(BuildSpec(source=Source(directory=str(tmp_path / ".." / ".." / "etc"))),
                              tmp_path / "work")
