"""What a test asks of a parser's answer to a payload that cannot be read."""

from __future__ import annotations

import re
from typing import Any

from shared.domain.events import Rejected


def rejection(result: Any, match: str | None = None) -> str:
    """The reason of `result`, a parser's answer that must be a Rejected, which must match `match`
    (a regex, as pytest.raises takes) when given."""
    rejected = result
    assert isinstance(rejected, Rejected), f"not rejected: {rejected!r}"
    if match is not None:
        assert re.search(match, rejected.reason), f"{rejected.reason!r} does not match {match!r}"
    return rejected.reason
