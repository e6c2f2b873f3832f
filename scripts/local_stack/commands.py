"""What `stack.py up`, `down` and `status` do.

`up` starts only what does not run yet, so it is harmless to repeat; `down` stops exactly the
processes `up` started (by pid, checked to still be ours) and removes the CA files `up` put into
the system's trust folder. Both hold a lock on STACK_DIR while they work.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
from collections.abc import Iterator
from pathlib import Path

from .azurite import azurite_command
from .certs import SYSTEM_CERTS_D, ensure_certificates, register_system_trust, unregister_system_trust
from .files import write_if_changed
from .host import host_available, host_code_changed, host_command, host_environment, host_status
from .keys import function_key, secret_key
from .net import port_open
from .parts import PARTS, READY, READY_TIMEOUT, STOP_TIMEOUT, is_ours, part_ports, running_pid
from .processes import pid_file, proc_alive, read_pid, spawn, terminate, wait_ready
from .registry import (
    EXTRA_REGISTRIES,
    ensure_htpasswd,
    extra_command,
    extra_config_path,
    extra_config_text,
    registry_command,
    registry_config_text,
    registry_environment,
)
from .settings import (
    AUTH_REGISTRY_USER,
    PROJECT,
    StackConfig,
    StackError,
    default_stack_dir,
    read_state,
    write_state,
)


def say(msg: str) -> None:
    print(msg, flush=True)


@contextlib.contextmanager
def locked(cfg: StackConfig) -> Iterator[None]:
    """Serialise `up`/`down` on one STACK_DIR (several engineers and test sessions share a checkout)."""
    cfg.stack_dir.mkdir(parents=True, exist_ok=True)
    with open(cfg.stack_dir / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------------
# up
# --------------------------------------------------------------------------------------------------


def up(
    cfg: StackConfig,
    with_host: bool = True,
    system_trust: bool = True,
    timeout: float | None = None,
    reload_host: bool = False,
) -> None:
    with locked(cfg):
        _up(cfg, with_host, system_trust, timeout, reload_host)


def start_part(
    cfg: StackConfig, part: str, argv: list[str], env: dict[str, str], timeout: float | None
) -> None:
    """Start `part` unless this stack's copy of it runs already; return once it answers."""
    limit = timeout or READY_TIMEOUT[part]
    pid = running_pid(cfg, part)
    if pid is not None:
        say(f"{part}: already running (pid {pid})")
        wait_ready(cfg, part, lambda: READY[part](cfg), None, limit)
        return
    stale = read_pid(cfg, part)
    if stale is not None:
        say(f"{part}: pid file named pid {stale}, which is not ours any more; starting anew")
        pid_file(cfg, part).unlink(missing_ok=True)
    busy = [p for p in part_ports(cfg, part) if port_open(p)]
    if busy:
        names = ", ".join(str(p) for p in busy)
        raise StackError(
            f"{part}: port {names} is already in use by a process this stack ({cfg.stack_dir}) did not "
            "start. Stop it, or choose other ports (AZURITE_*_PORT, REGISTRY_PORT, HOST_PORT or flags)."
        )
    say(f"{part}: starting…")
    proc = spawn(cfg, part, argv, env, PROJECT)
    wait_ready(cfg, part, lambda: READY[part](cfg), proc, limit)
    say(f"{part}: ready (pid {proc.pid})")


def _up(
    cfg: StackConfig, with_host: bool, system_trust: bool, timeout: float | None, reload_host: bool
) -> None:
    for d in (cfg.logs_dir, cfg.pids_dir, cfg.azurite_dir, cfg.registry_dir / "data", cfg.work_dir,
              cfg.contexts_dir,
              cfg.public_registry_dir / "data", cfg.auth_registry_dir / "data"):
        d.mkdir(parents=True, exist_ok=True)
    key = function_key(cfg, create=True)
    assert key
    secret_key(cfg, create=True)
    for made in ensure_certificates(cfg):
        say(f"registry: made {made}")

    state = read_state(cfg)
    trusted: list[str] = []
    if system_trust:
        trusted = register_system_trust(cfg)
    state.update(
        {
            "ports": cfg.ports(),
            "system_trust": sorted(set(state.get("system_trust", [])) | set(trusted)),
        }
    )
    write_state(cfg, state)

    changed = write_if_changed(cfg.registry_config, registry_config_text(cfg, key))
    if changed and running_pid(cfg, "registry"):
        say("registry: WARNING config.yml changed while the registry runs; `down` then `up` to apply it")
    ensure_htpasswd(cfg)
    for part in EXTRA_REGISTRIES:
        written = write_if_changed(extra_config_path(cfg, part), extra_config_text(cfg, part))
        if written and running_pid(cfg, part):
            say(f"{part}: WARNING config.yml changed while it runs; `down` then `up` to apply it")

    base_env = dict(os.environ)
    start_part(cfg, "azurite", azurite_command(cfg), base_env, timeout)
    start_part(cfg, "registry", registry_command(cfg), registry_environment(base_env), timeout)
    for part in EXTRA_REGISTRIES:
        start_part(cfg, part, extra_command(cfg, part), registry_environment(base_env), timeout)
    if not with_host:
        say("host: not started (--no-host)")
    elif not host_available():
        say("host: skipped (devhost/__main__.py does not exist yet)")
    else:
        # A running host keeps serving the code it imported at its start.
        pid = running_pid(cfg, "host")
        stale_file = host_code_changed(pid) if pid else None
        if stale_file and reload_host:
            say(f"host: {stale_file} changed since the host started; restarting it")
            stop_part(cfg, "host")
        elif stale_file:
            say(
                f"host: WARNING {stale_file} changed since the host started, which still serves the old "
                "code; `stack.py up --reload-host` restarts it"
            )
        start_part(cfg, "host", host_command(cfg), host_environment(cfg, key), timeout)
        # Functions the host could not serve (a missing setting, an import error) show up here.
        for name, error in ((host_status(cfg) or {}).get("errors") or {}).items():
            say(f"host: WARNING function {name} is not served: {error}")

    say("")
    say(f"stack is up (STACK_DIR={cfg.stack_dir})")
    say(f"  Azurite blob    {cfg.azurite_url('blob')}")
    say(f"  Azurite queue   {cfg.azurite_url('queue')}")
    say(f"  Azurite table   {cfg.azurite_url('table')}")
    say(f"  registry        https://{cfg.registry}  CA {cfg.ca_cert}")
    say(f"                  buildah/skopeo: --cert-dir {cfg.cert_dir}")
    say(f"  public registry https://{cfg.public_registry}  (no notifications: polled)")
    say(f"  auth registry   https://{cfg.auth_registry}  (htpasswd: user {AUTH_REGISTRY_USER}, password in "
        f"{cfg.auth_password_file})")
    if trusted:
        say(
            f"                  CA also registered in {SYSTEM_CERTS_D}/{cfg.registry}/ (no --cert-dir needed)"
        )
    elif system_trust:
        say(f"                  {SYSTEM_CERTS_D} not writable: pass --cert-dir to buildah/skopeo")
    host_state = "running" if running_pid(cfg, "host") else "not running"
    say(f"  Functions host  {cfg.host_url}/api ({host_state}); webhook {cfg.webhook_url}")
    say(f"  function key    {cfg.key_file}")
    say(f"  logs            {cfg.logs_dir}/<part>.log")
    env_cmd = "python3 scripts/stack.py env"
    if cfg.stack_dir != default_stack_dir({}):
        env_cmd = f"STACK_DIR={shlex.quote(str(cfg.stack_dir))} " + env_cmd
    say(f'to use it from a shell:  eval "$({env_cmd})"')


# --------------------------------------------------------------------------------------------------
# down
# --------------------------------------------------------------------------------------------------


def stop_part(cfg: StackConfig, part: str, timeout: float | None = None) -> None:
    pid = read_pid(cfg, part)
    if pid is None:
        say(f"{part}: not running")
        return
    if not is_ours(cfg, part, pid):
        # Never signal a process we cannot prove is ours: pids get reused.
        why = "has exited" if not proc_alive(pid) else "now belongs to another program"
        say(f"{part}: pid {pid} {why}; left alone, stale pid file removed")
        pid_file(cfg, part).unlink(missing_ok=True)
        return
    killed = terminate(pid, timeout or STOP_TIMEOUT[part])
    pid_file(cfg, part).unlink(missing_ok=True)
    say(f"{part}: stopped (pid {pid}{', needed SIGKILL' if killed else ''})")


def down(cfg: StackConfig, timeout: float | None = None) -> None:
    with locked(cfg):
        for part in reversed(PARTS):
            stop_part(cfg, part, timeout)
        state = read_state(cfg)
        removed = unregister_system_trust(cfg, state.get("system_trust", []))
        if removed:
            say(f"registry: removed the CA from {', '.join(str(Path(r).parent) for r in removed)}")
        if "system_trust" in state:
            state["system_trust"] = []
            write_state(cfg, state)


# --------------------------------------------------------------------------------------------------
# status
# --------------------------------------------------------------------------------------------------


def status(cfg: StackConfig) -> dict[str, str]:
    """part -> "running" | "running, not answering" | "stopped" | "skipped" (printed by the command)."""
    result = {}
    for part in PARTS:
        pid = running_pid(cfg, part)
        if pid is None:
            result[part] = "skipped" if part == "host" and not host_available() else "stopped"
        elif READY[part](cfg):
            result[part] = "running"
        else:
            result[part] = "running, not answering"
    return result


def print_status(cfg: StackConfig) -> int:
    where = {
        "azurite": f"{cfg.azurite_url('blob')} {cfg.azurite_url('queue')} {cfg.azurite_url('table')}",
        "registry": f"https://{cfg.registry}",
        "public-registry": f"https://{cfg.public_registry}",
        "auth-registry": f"https://{cfg.auth_registry}",
        "host": cfg.host_url,
    }
    states = status(cfg)
    say(f"STACK_DIR={cfg.stack_dir}")
    for part, state in states.items():
        pid = running_pid(cfg, part)
        detail = f"pid {pid}, {where[part]}" if pid else where[part]
        if state == "skipped":
            detail = "devhost/__main__.py does not exist yet"
        say(f"  {part:<9} {state:<24} {detail}")
    # Like an init script's status: 0 when every part that can run does, 3 otherwise.
    return 0 if all(s in ("running", "skipped") for s in states.values()) else 3
