"""Dockerfiles at the edge: any text with any build args gives the stages and bases, or a
DockerfileError naming the problem; never another exception. What it gives is consistent: every
base is a normalized reference, the runtime bases are among all bases, stages refer backwards."""

from __future__ import annotations

from hypothesis import example, given

from shared.domain.dockerfile import DockerfileError, parse_dependencies
from shared.domain.image_ref import ImageRef
from shared.domain.tasks import TaskError, compute_dependencies
from tests.property import strategies as s


@given(s.dockerfile_text, s.build_args)
@example("FROM a\n\\", {})  # a lone continuation last: once an AttributeError
@example("\\", {})
@example("FROM a\x00b", {})
@example("\x00", {})
@example("FROM ${A:?}", {})
@example("ARG A=${A\nFROM $A", {})
@example("# escape=`\nFROM a`\n b", {})
@example("FROM " + "a/" * 200 + "a", {})
def test_any_dockerfile_parses_or_is_a_dockerfile_error(text, args):
    try:
        deps = parse_dependencies(text, args)
    except DockerfileError as exc:
        assert exc.message
        return
    assert deps.stages
    assert set(deps.runtime) <= set(deps.all)
    for base in deps.all:
        assert str(ImageRef.parse(base)) == base
    for stage in deps.stages:
        assert stage.from_stage is None or stage.from_stage < stage.index
    deps.to_dict()


@given(s.dockerfile_text, s.build_args)
def test_task_dependencies_are_read_or_refused_as_a_task_error(text, args):
    try:
        found = compute_dependencies(text, args)
    except TaskError:
        return
    assert len({d.image for d in found}) == len(found)
