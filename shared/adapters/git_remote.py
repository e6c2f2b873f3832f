"""What a branch of a remote repository points at, from `git ls-remote --symref` (one request,
no clone). A task's git token goes to git as an HTTP header in the environment of that one
process, as for clones (shared/adapters/sources.py): never in the URL, argv, logs or records."""

from __future__ import annotations

import base64
import os
import subprocess

from shared.domain.git_polling import GitRemoteError, RemoteHead, parse_ls_remote

TIMEOUT_SECONDS = 60


class GitLsRemote:
    def head(self, url: str, branch: str | None, token: str | None) -> RemoteHead:
        env = dict(os.environ, GIT_TERMINAL_PROMPT="0")
        if token:
            basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
            env.update(GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="http.extraHeader",
                       GIT_CONFIG_VALUE_0=f"Authorization: Basic {basic}")
        patterns = [f"refs/heads/{branch}"] if branch else ["HEAD"]
        try:
            result = subprocess.run(["git", "ls-remote", "--symref", "--", url, *patterns], env=env,
                                    capture_output=True, text=True, timeout=TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            raise GitRemoteError(f"{url}: no answer within {TIMEOUT_SECONDS} s") from None
        except (OSError, ValueError) as exc:  # git missing; a NUL byte
            raise GitRemoteError(f"{url}: {type(exc).__name__}") from None
        if result.returncode != 0:
            message = (result.stderr.strip().splitlines()[-1:] or ["git ls-remote failed"])[0]
            raise GitRemoteError(f"{url}: {message.replace(token, '***') if token else message}")
        return parse_ls_remote(result.stdout, branch)
