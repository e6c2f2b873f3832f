"""Run notifications (`--update-trigger-endpoint`): the JSON a task's endpoint receives when one of
its runs starts and when it ends, and its HMAC signature.

One notification per run and event, named `<run id>.<event>` (`da12.started`, `da12.ended`,
`da12.held`): the id is the body's `id` and the `X-Basetrigger-Delivery` header, so a receiver that
gets one twice (delivery is at least once) can tell. The body holds what the run record shows, never
a secret; the signature is `sha256=<hex HMAC-SHA256 of the body>` under the task's secret.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from shared.domain.runs import Run
from shared.domain.vocabulary import RunStatus, format_time, utc_now

SIGNATURE_HEADER = "X-Basetrigger-Signature-256"
EVENT_HEADER = "X-Basetrigger-Event"
DELIVERY_HEADER = "X-Basetrigger-Delivery"
MAX_ENDPOINT = 2048
MAX_SECRET = 1024

STARTED, ENDED, HELD = "started", "ended", "held"


class EndpointError(ValueError):
    """The endpoint URL or its secret cannot be used."""


def check_endpoint(url: str | None, secret: str | None = None) -> None:
    if url is None:
        if secret:
            raise EndpointError("an update trigger secret needs an --update-trigger-endpoint")
        return
    if not isinstance(url, str) or len(url) > MAX_ENDPOINT or not url.isprintable():
        raise EndpointError(f"the update trigger endpoint must be a URL of at most {MAX_ENDPOINT} characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parses the port: ValueError for a bad one
    except ValueError as exc:
        raise EndpointError(f"invalid update trigger endpoint: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EndpointError("the update trigger endpoint must be an http:// or https:// URL")
    if parts.username or parts.password:
        # The URL is shown with the task: a password in it would be shown too.
        raise EndpointError("the update trigger endpoint must not carry credentials; sign the "
                            "notifications with an update trigger secret instead")
    try:
        address = ipaddress.ip_address(parts.hostname)
    except ValueError:
        address = None
    if address is not None and (address.is_link_local or address.is_multicast or address.is_unspecified):
        # 169.254.169.254 is the cloud's instance metadata service: never a receiver.
        raise EndpointError(f"the update trigger endpoint must not be the address {address}")
    if secret is not None and (not isinstance(secret, str) or not secret or len(secret) > MAX_SECRET):
        raise EndpointError(f"the update trigger secret must be 1 to {MAX_SECRET} characters")


def endpoint_label(url: str) -> str:
    """What logs and decisions may say of an endpoint: its scheme, host and port (a path or query may
    hold a token, as many webhook URLs do)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def event_of(run: Run) -> str | None:
    """Which notification the run's status calls for (None: none)."""
    if run.status == RunStatus.RUNNING:
        return STARTED
    if run.status == RunStatus.HELD:
        return HELD
    return ENDED if run.finished else None


@dataclass(frozen=True)
class Notification:
    notification_id: str
    task: str
    run_id: str
    event: str
    body: bytes

    @property
    def event_type(self) -> str:
        return "run.started" if self.event == STARTED else "run.ended"

    def headers(self, secret: str | None) -> dict[str, str]:
        headers = {"Content-Type": "application/json", EVENT_HEADER: self.event_type,
                   DELIVERY_HEADER: self.notification_id}
        if secret:
            headers[SIGNATURE_HEADER] = signature(secret, self.body)
        return headers


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def run_event(run: Run) -> tuple[str, dict[str, Any]] | None:
    """The event the run's status calls for and its JSON body (None: none), for a task's endpoint
    and the Event Grid topic alike."""
    event = event_of(run)
    if event is None:
        return None
    time = run.started_at if event == STARTED else run.finished_at
    return event, {
        "id": f"{run.run_id}.{event}",
        "type": "run.started" if event == STARTED else "run.ended",
        "time": format_time(time or utc_now()),
        "run": {"id": run.run_id, "task": run.task, "status": str(run.status), "trigger": str(run.trigger),
                "cause": run.cause, "reason": run.reason, "commit": run.commit, "branch": run.branch,
                "images": list(run.output_images), "output_digest": run.output_digest,
                "created_at": format_time(run.created_at), "started_at": format_time(run.started_at),
                "finished_at": format_time(run.finished_at)},
    }


def notification_for(run: Run) -> Notification | None:
    """The notification of a task's run as it stands (it started, ended or was held)."""
    found = run_event(run)
    if found is None or run.task is None:
        return None
    event, body = found
    return Notification(body["id"], run.task, run.run_id, event, json.dumps(body, sort_keys=True).encode())
