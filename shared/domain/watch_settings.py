"""Which registries are watched how: by their events, by polling, or both (BASETRIGGER_WATCH).

A registry that notifies basetrigger (the app's own registry with its webhook, an ACR with Event
Grid) is watched by its events; every other registry sends nothing, so its bases are polled. The
default follows from the configuration: BASETRIGGER_REGISTRY and the ACR of
BASETRIGGER_ACR_NAME send events, everything else (Docker Hub, MCR, ghcr.io, quay.io, a private
registry) is polled, and no base is left unwatched. BASETRIGGER_WATCH overrides it per registry:
`registry=mode` pairs separated by commas, where a registry may start with `*.` to match a domain
(`*.azurecr.io=both,quay.io=poll`).
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.domain.credentials import CredentialError, normalize_login_server
from shared.domain.vocabulary import Watch, names

DEFAULT_INTERVAL_SECONDS = 300
DEFAULT_CONCURRENCY = 16


class WatchError(ValueError):
    pass


def parse_watch(text: str) -> tuple[tuple[str, Watch], ...]:
    """`host=mode,*.domain=mode` -> ((pattern, mode), ...), in the order given."""
    rules: list[tuple[str, Watch]] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        pattern, sep, mode = item.partition("=")
        if not sep or mode.strip().lower() not in names(Watch):
            raise WatchError(f"BASETRIGGER_WATCH: {item!r} is not registry={'|'.join(names(Watch))}")
        pattern = pattern.strip().lower()
        try:
            host = normalize_login_server(pattern[2:] if pattern.startswith("*.") else pattern)
        except CredentialError as exc:
            raise WatchError(f"BASETRIGGER_WATCH: {exc}") from None
        rules.append(("*." + host if pattern.startswith("*.") else host, Watch(mode.strip().lower())))
    return tuple(rules)


@dataclass(frozen=True)
class PollSettings:
    interval_seconds: int = DEFAULT_INTERVAL_SECONDS
    # Manifest requests in flight at once, per registry (and in all).
    concurrency: int = DEFAULT_CONCURRENCY
    rules: tuple[tuple[str, Watch], ...] = ()
    # Registries that notify basetrigger unless a rule says otherwise.
    event_registries: tuple[str, ...] = ()

    def mode(self, registry: str) -> Watch:
        """How `registry` (a reference's host) is watched: the first matching rule, else the default."""
        host = registry.lower()
        for pattern, mode in self.rules:
            if host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:])):
                return mode
        return Watch.EVENTS if host in self.event_registries else Watch.POLL

    def polled(self, registry: str) -> bool:
        return self.mode(registry) in (Watch.POLL, Watch.BOTH)


def schedule_for(interval_seconds: int) -> str:
    """The NCRONTAB schedule (seconds first) that fires every `interval_seconds`. Only intervals
    that divide a minute, an hour or a day evenly have one; others are refused in config."""
    s = interval_seconds
    if 0 < s < 60 and 60 % s == 0:
        return f"*/{s} * * * * *"
    if s % 60 == 0 and 0 < s // 60 < 60 and 60 % (s // 60) == 0:
        return f"0 */{s // 60} * * * *"
    if s % 3600 == 0 and 0 < s // 3600 <= 24 and 24 % (s // 3600) == 0:
        return f"0 0 */{s // 3600} * * *"
    raise WatchError(f"BASETRIGGER_POLL_INTERVAL={s}: use a number of seconds that divides a minute, an "
                     "hour or a day evenly (e.g. 30, 60, 120, 300, 600, 900, 1800, 3600)")
