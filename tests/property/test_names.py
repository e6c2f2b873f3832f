"""Task names at the edge: a name is letters, digits, `-` and `_` (at most 63, not starting with `-`
or `_`), or a TaskError; what passes is always a legal table key."""

from __future__ import annotations

import re

from hypothesis import example, given
from hypothesis import strategies as st

from shared.domain.tasks import TaskError, check_name
from tests.property import strategies as s

LEGAL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")


@given(st.one_of(st.from_regex(LEGAL, fullmatch=True), s.odd_text, s.not_text,
                 st.from_regex(LEGAL, fullmatch=True).map(lambda n: n + "\n")))
@example("ab\n")  # once passed: `$` matched before the newline, and `ab\n` reached storage as a key
@example("a" * 64)
@example("-a")
def test_a_task_name_is_legal_or_a_task_error(name):
    try:
        checked = check_name(name)
    except TaskError:
        assert not (isinstance(name, str) and LEGAL.fullmatch(name))
        return
    assert LEGAL.fullmatch(checked)
