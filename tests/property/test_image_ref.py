"""Image references at the edge: any text parses to one normalized reference or is an
InvalidReference; table keys made from references are legal, fit Table Storage, and keep the
prefix property key-range queries rely on."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from shared.domain.image_ref import MAX_KEY_LENGTH, ImageRef, InvalidReference, encode_key
from shared.domain.images import has_registry, qualify, render
from tests.property import strategies as s

# What Azure Table Storage refuses in a key.
FORBIDDEN = re.compile(r"[/\\#?\x00-\x1f\x7f-\x9f]")


@given(s.reference_like | s.not_text)
def test_any_text_is_a_reference_or_an_invalid_reference(text):
    try:
        ref = ImageRef.parse(text)
    except InvalidReference as exc:
        assert exc.reason
        return
    assert ref.tag is not None or ref.digest is not None
    assert "/" in str(ref) and ref.registry and ref.repository
    assert ImageRef.parse(str(ref)) == ref  # normal form is a fixed point


@given(s.reference_like)
def test_keys_from_references_are_legal_table_keys_or_refused(text):
    try:
        key = encode_key(text)
    except ValueError:
        return
    assert not FORBIDDEN.search(key)
    # Table Storage counts 1 KiB in UTF-16: a key encode_key hands out must fit it.
    assert len(key.encode("utf-16-le")) <= MAX_KEY_LENGTH


@given(st.text(max_size=40), st.text(max_size=40))
def test_keys_keep_prefixes(a, b):
    assert encode_key(a + b) == encode_key(a) + encode_key(b)


@given(
    s.reference_like,
    st.sampled_from([None, "localhost:5000", "myregistry.azurecr.io", "[::1]:5000"]),
    st.sampled_from(["da1", "", "ca12"]),
)
def test_image_templates_render_to_a_reference_or_are_invalid(template, registry, run_id):
    for text in (template, template + ":{{.Run.ID}}", "{{.Run.Registry}}/" + template):
        try:
            rendered = render(text, run_id, registry)
        except InvalidReference:
            continue
        assert ImageRef.parse(rendered) == ImageRef.parse(str(ImageRef.parse(rendered)))
        if registry:
            assert has_registry(rendered)
    try:
        qualify(template, registry)
    except InvalidReference:
        pass
