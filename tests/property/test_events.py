"""Events of every format at the domain's edge: whatever arrives is an ImagePushed, an Ignored, or a
Rejected with a reason (the sender's mistake), never an exception; and what is accepted can be stored
(its keys fit Table Storage) and names one normalized reference."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from shared.adapters.ingress.distribution import from_distribution_envelope
from shared.adapters.ingress.eventgrid import from_eventgrid
from shared.domain.events import (
    MAX_EVENT_ID,
    Ignored,
    ImagePushed,
    MalformedEvent,
    Rejected,
    check_digest,
    check_event_id,
    printable_id,
)
from shared.domain.image_ref import MAX_KEY_LENGTH, ImageRef, encode_key, key_size
from tests.property import strategies as s


def accepted_is_storable(result: ImagePushed | Ignored) -> None:
    check_event_id(result.event_id)
    # A decision's marker row is keyed by the event id (`e|<escaped id>`): it must fit a key, which
    # Table Storage measures in UTF-16 (key_size).
    assert key_size(f"e|{encode_key(result.event_id)}") <= MAX_KEY_LENGTH
    if isinstance(result, ImagePushed):
        check_digest(result.digest)
        reference = result.reference
        assert str(ImageRef.parse(reference)) == reference  # normalized once and for all
        # The dependency index's partition key, and the run table's `image|<reference>|<counter>`.
        assert key_size(f"image|{encode_key(reference)}|{'9' * 20}") <= MAX_KEY_LENGTH
        assert result.time.tzinfo is not None


def parse_grid(event: dict) -> ImagePushed | Ignored | None:
    """from_eventgrid on an event dict of either schema, as the Functions trigger splits it."""
    cloud = "specversion" in event or "type" in event
    result = from_eventgrid(
        event_id=event.get("id"),
        event_type=event.get("type" if cloud else "eventType"),
        data=event.get("data"),
        time=event.get("time" if cloud else "eventTime"),
    )
    if isinstance(result, Rejected):
        assert result.reason  # a reason the decision log records
        return None
    return result


@given(s.any_grid_event)
def test_event_grid_events_parse_or_are_malformed(event):
    result = parse_grid(event)
    if result is not None:
        accepted_is_storable(result)


PUSHED = "Microsoft.ContainerRegistry.ImagePushed"


def push_data(repository="app", tag="1", host="localhost:5000"):
    return {
        "target": {"repository": repository, "tag": tag, "digest": "sha256:" + "a" * 64},
        "request": {"host": host},
    }


@given(
    event_id=s.json_values | s.odd_text,
    event_type=s.json_values | s.event_type,
    data=s.json_values | s.acr_data,
    time=s.json_values | s.timestamp,
)
# Ids within their 256 characters whose keys did not fit Table Storage (escaped, in UTF-16): each
# was a 500 the sender retried for a day. Then a valid name too long to be indexed as a key.
@example(event_id="%" * 200, event_type=PUSHED, data=push_data(), time=None)
@example(event_id="\U0001f600" * 256, event_type=PUSHED, data=push_data(), time=None)
@example(
    event_id="x",
    event_type=PUSHED,
    data=push_data(repository="a/" * 124 + "a", tag="t" * 128, host="h.io"),
    time=None,
)
def test_from_eventgrid_takes_any_json_in_any_part(event_id, event_type, data, time):
    result = from_eventgrid(event_id=event_id, event_type=event_type, data=data, time=time)
    if isinstance(result, Rejected):
        return
    accepted_is_storable(result)


@given(s.envelope)
@example({"events": [{"id": "1", "action": "push", "target": {"mediaType": ["a list"]}}]})  # once a TypeError
def test_distribution_envelopes_parse_or_are_malformed(body):
    results = from_distribution_envelope(body)
    if isinstance(results, Rejected):
        assert results.reason
        return
    assert len(results) == len(body["events"])
    for result in results:
        accepted_is_storable(result)


@given(s.event_id | s.json_values)
def test_any_event_id_is_checked_or_refused_and_always_printable_for_the_log(value):
    shown = printable_id(value)
    assert isinstance(shown, str) and len(shown) <= 121
    try:
        checked = check_event_id(value)
    except MalformedEvent:
        return
    assert 0 < len(checked) <= MAX_EVENT_ID


@given(s.digest | s.json_values)
def test_any_digest_is_checked_or_refused(value):
    try:
        check_digest(value)
    except MalformedEvent:
        return
    assert isinstance(value, str) and ":" in value and len(value) <= 7 + 128


@given(st.builds(lambda d: {"events": [d]}, s.distribution_event))
def test_a_tagged_manifest_push_that_parses_names_what_was_pushed(body):
    results = from_distribution_envelope(body)
    if isinstance(results, Rejected):
        return
    (result,) = results
    if isinstance(result, ImagePushed):
        target = body["events"][0]["target"]
        assert result.digest == target["digest"] and result.tag == target["tag"]
