"""The stack's processes: pid files, "is this pid still the process we started?", spawn, wait, stop.

Each part runs detached, logs to $STACK_DIR/logs/<part>.log and has its pid in
$STACK_DIR/pids/<part>.pid. A pid file alone is not proof: after a reboot or a crash the number may
belong to anything. So a pid counts as ours only if the process is alive, its command line has the
part's identifying arguments, and (where /proc lets us read it) its environment carries
BASETRIGGER_STACK_DIR=<this stack dir>, which `spawn` sets on everything it starts. Which arguments
identify which part is the parts module's business; this module only compares.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .settings import StackConfig, StackError


def pid_file(cfg: StackConfig, part: str) -> Path:
    return cfg.pids_dir / f"{part}.pid"


def log_file(cfg: StackConfig, part: str) -> Path:
    return cfg.logs_dir / f"{part}.log"


def read_pid(cfg: StackConfig, part: str) -> int | None:
    try:
        return int(pid_file(cfg, part).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def proc_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie has exited; it only waits to be reaped


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def environ_marker(pid: int) -> str | None:
    """The BASETRIGGER_STACK_DIR the process was started with; None if /proc does not tell us."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    for item in raw.split(b"\0"):
        if item.startswith(b"BASETRIGGER_STACK_DIR="):
            return item.split(b"=", 1)[1].decode(errors="replace")
    return ""


def started_by(cfg: StackConfig, pid: int, identity: Sequence[str]) -> bool:
    """Whether `pid` is alive, has every `identity` token in its argv, and was started for this stack."""
    if not proc_alive(pid):
        return False
    argv = cmdline(pid)
    if not all(token in argv for token in identity):
        return False
    marker = environ_marker(pid)
    return marker is None or marker == str(cfg.stack_dir)


def process_start_time(pid: int) -> float | None:
    """When the process started, in seconds since the epoch (from /proc)."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(
            int(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime")
        )
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text) or "    (log is empty)"


def spawn(cfg: StackConfig, part: str, argv: list[str], env: dict[str, str],
          cwd: Path) -> subprocess.Popen[bytes]:
    cfg.logs_dir.mkdir(parents=True, exist_ok=True)
    cfg.pids_dir.mkdir(parents=True, exist_ok=True)
    env = dict(env, BASETRIGGER_STACK_DIR=str(cfg.stack_dir))
    log_path = log_file(cfg, part)
    # Owner-only: logs of the stack's parts may quote keys (the host logs a key it generates).
    with os.fdopen(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as log:
        os.fchmod(log.fileno(), 0o600)
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} start: {shlex.join(argv)}\n".encode())
        log.flush()
        # A new session: the part outlives this script, gets no signal from this terminal's ^C, and
        # is the leader of its own process group, which `down` signals as a whole (so the host's
        # children, e.g. a buildah build, stop with it).
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    pid_file(cfg, part).write_text(f"{proc.pid}\n")
    return proc


def wait_ready(
    cfg: StackConfig,
    part: str,
    ready: Callable[[], bool],
    proc: subprocess.Popen[bytes] | None,
    timeout: float,
) -> None:
    """Poll `ready` until it holds; StackError with the log's tail if the part dies or times out.

    `proc` is the process just spawned, or None for one an earlier `up` started (then its pid file
    tells which process to watch).
    """
    deadline = time.monotonic() + timeout
    pid = proc.pid if proc else read_pid(cfg, part)
    log_path = log_file(cfg, part)
    while True:
        if ready():
            return
        dead = proc.poll() is not None if proc else (pid is None or not proc_alive(pid))
        if dead:
            with contextlib.suppress(OSError):
                pid_file(cfg, part).unlink()
            raise StackError(
                f"{part} exited before it was ready"
                + (f" (exit code {proc.returncode})" if proc else "")
                + f"; last lines of {log_path}:\n"
                + log_tail(log_path)
            )
        if time.monotonic() > deadline:
            if proc:  # ours and useless: do not leave it holding the port
                terminate(proc.pid)
                with contextlib.suppress(OSError):
                    pid_file(cfg, part).unlink()
            raise StackError(
                f"{part} did not become ready within {timeout:.0f}s; last lines of "
                f"{log_path}:\n" + log_tail(log_path)
            )
        time.sleep(0.2)


def _signal_group(pid: int, sig: int) -> None:
    # `spawn` made each part a session (and process-group) leader; signal the group when that still
    # holds, the single process otherwise.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def terminate(pid: int, timeout: float = 10.0) -> bool:
    """SIGTERM, wait, SIGKILL. Returns True if SIGKILL was needed."""
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc_alive(pid):
            return False
        time.sleep(0.1)
    _signal_group(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while proc_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return True
