"""The build-runs queue message: `{"v": 1, "runId": "da1"}`, one per run."""

from __future__ import annotations

import json

MESSAGE_VERSION = 1


class MalformedMessage(ValueError):
    pass


def encode(run_id: str) -> bytes:
    return json.dumps({"v": MESSAGE_VERSION, "runId": run_id}).encode()


def decode(body: bytes | str) -> str:
    """The run id a message names; MalformedMessage for anything else."""
    try:
        data = json.loads(body)
        run_id = data["runId"]
    except (ValueError, KeyError, TypeError) as exc:
        raise MalformedMessage(f"not a build-run message: {body[:200]!r}") from exc
    if not isinstance(run_id, str) or not run_id:
        raise MalformedMessage("runId must be a non-empty string")
    return run_id
