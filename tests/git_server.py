"""A git server over HTTP for the tests: Debian's `git http-backend` (smart HTTP, read-only),
behind a tiny http.server that passes each request to it as CGI. Commits are pushed to the bare
repositories directly (`git push` to the folder); tasks clone them over http:// as from a git host.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit


def _handler(root: Path) -> type[BaseHTTPRequestHandler]:
    class GitHandler(BaseHTTPRequestHandler):
        def _cgi(self) -> None:
            url = urlsplit(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            env = dict(os.environ, GIT_PROJECT_ROOT=str(root), GIT_HTTP_EXPORT_ALL="1",
                       REQUEST_METHOD=self.command, PATH_INFO=url.path, QUERY_STRING=url.query,
                       CONTENT_TYPE=self.headers.get("Content-Type") or "", CONTENT_LENGTH=str(len(body)),
                       GIT_PROTOCOL=self.headers.get("Git-Protocol") or "", REMOTE_ADDR="127.0.0.1")
            result = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True,
                                    timeout=120)
            head, _, payload = result.stdout.partition(b"\r\n\r\n")
            status, headers = 200, []
            for line in head.decode("latin-1").split("\r\n"):
                name, _, value = line.partition(":")
                if name.lower() == "status":
                    status = int(value.strip().split()[0])
                elif name:
                    headers.append((name, value.strip()))
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _cgi

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

    return GitHandler


@contextmanager
def git_http_server(root: Path) -> Iterator[str]:
    """Serve the bare repositories under `root`; yields the base URL (`http://127.0.0.1:PORT`)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(root))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                            env=dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@e",
                                     GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@e"))
    return result.stdout.strip()


def commit_file(work: Path, name: str, text: str, message: str) -> str:
    """Write, commit and push to origin's main; the new commit's id."""
    (work / name).write_text(text)
    git(work, "add", name)
    git(work, "commit", "-qm", message)
    git(work, "push", "-q", "origin", "HEAD:main")
    return git(work, "rev-parse", "HEAD")


def bare_repository(folder: Path) -> tuple[Path, Path]:
    """A bare repository `app.git` (branch main) under `folder/git`, to serve with git_http_server,
    and a clone of it in `folder/work` to commit to: (the served root, the clone)."""
    root = folder / "git"
    (root / "app.git").mkdir(parents=True)
    git(root / "app.git", "init", "-q", "--bare", "-b", "main")
    work = folder / "work"
    git(folder, "clone", "-q", str(root / "app.git"), str(work))
    return root, work
