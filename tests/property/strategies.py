"""Hypothesis strategies for what reaches basetrigger's edge: JSON of any shape, event fields that
are almost right (each one valid, wrong in type, wrong in grammar, or far too long), reference-like
text, and Dockerfile-like text.

Long values are made by repetition (`"x" * 70_000`), which costs nothing to generate; the limits they
probe are the ones the issue found: table keys (1 KiB), properties (64 KiB), names (255).
"""

from __future__ import annotations

import os
import string
import uuid

from hypothesis import settings
from hypothesis import strategies as st

CHAOS = os.environ.get("HYPOTHESIS_PROFILE") == "chaos"


def examples(ci: int, chaos: int | None = None, **more) -> settings:
    """`ci` examples under `make test`; under `make chaos`, `chaos` or else the chaos profile's count.
    For tests whose every example reaches storage or a host, where the profile's default would cost
    too much."""
    count = (chaos or settings.default.max_examples) if CHAOS else ci
    return settings(max_examples=count, **more)


# ---- any JSON ---------------------------------------------------------------------------------
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


def repeated(alphabet: st.SearchStrategy[str], sizes: list[int]) -> st.SearchStrategy[str]:
    """A long string cheaply: one piece repeated to one of `sizes` characters."""
    return st.builds(lambda piece, n: (piece * n)[:n], alphabet.filter(bool), st.sampled_from(sizes))


LIMITS = [120, 121, 255, 256, 257, 1023, 1024, 1025, 2000, 32_768, 70_000, 200_000]
long_text = repeated(st.text(min_size=1, max_size=3), LIMITS)
# Characters that must be escaped in table keys, that are several bytes in UTF-8, or that a
# parser treats specially.
awkward = st.text(
    alphabet=st.sampled_from(list("/\\#?%\x00\x01\x7f\x85\u2028\U0001f600é:@[]{}\"'\n\t $.-_")), max_size=12
)
odd_text = st.one_of(
    st.text(max_size=30),
    awkward,
    long_text,
    repeated(st.sampled_from(["\U0001f600", "é", "%", "/"]), [85, 128, 256, 257, 342]),
)
not_text = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.lists(json_scalars, max_size=3),
    st.dictionaries(st.text(max_size=5), json_scalars, max_size=3),
)


def sometimes(valid: st.SearchStrategy, *wrong: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly the valid value, else one of the wrong ones (or anything at all)."""
    return st.one_of(valid, valid, valid, *wrong, odd_text, not_text)


# ---- the parts of a push event ----------------------------------------------------------------
hexdigits = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
valid_digest = st.one_of(
    hexdigits.map(lambda h: f"sha256:{h}"),
    st.text(alphabet="0123456789abcdef", min_size=128, max_size=128).map(lambda h: f"sha512:{h}"),
)
digest = sometimes(
    valid_digest,
    hexdigits.map(lambda h: f"sha256:{h.upper()}"),
    st.text(alphabet=string.ascii_letters + string.digits + ":+._-=", max_size=80),
    repeated(st.just("f"), [64, 65, 128, 70_000]).map(lambda h: f"sha256:{h}"),
)
component = st.from_regex(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*", fullmatch=True).filter(
    lambda c: len(c) < 40
)
valid_repository = st.lists(component, min_size=1, max_size=4).map("/".join)
repository = sometimes(
    valid_repository, repeated(st.just("r"), [255, 256, 200_000]), repeated(st.just("a/"), [255, 256, 1024])
)
valid_tag = st.from_regex(r"[\w][\w.-]{0,127}", fullmatch=True).filter(str.isascii)
tag = sometimes(valid_tag, repeated(st.just("t"), [128, 129, 5000]))
valid_host = st.sampled_from(
    [
        "localhost:5000",
        "myregistry.azurecr.io",
        "127.0.0.1:5000",
        "[::1]:5000",
        "registry.example.com:443",
        "docker.io",
    ]
)
host = sometimes(valid_host, repeated(st.just("h"), [255, 256, 70_000]).map(lambda h: h + ".io"))
event_id = sometimes(
    st.uuids().map(str),
    repeated(st.just("x"), [256, 257, 2000]),
    repeated(st.just("\U0001f600"), [255, 256]),
    st.just(""),
)
timestamp = sometimes(
    st.datetimes().map(lambda d: d.isoformat() + "Z"),
    st.just("2026-11-29T00:00:00.1234567Z"),
    st.just("not a time"),
)
media_type = sometimes(
    st.sampled_from(
        [
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.oci.image.index.v1+json",
            "application/vnd.oci.image.manifest.v1+json",
        ]
    ),
    st.just("application/octet-stream"),
)
event_type = sometimes(
    st.sampled_from(["Microsoft.ContainerRegistry.ImagePushed", "ImagePushed"]),
    st.just("Microsoft.ContainerRegistry.ImageDeleted"),
    st.just("Microsoft.ContainerRegistry.ChartPushed"),
)


def maybe_missing(fields: dict[str, st.SearchStrategy]) -> st.SearchStrategy[dict]:
    """A dict with each field usually present, sometimes left out, plus sometimes an extra one."""
    present = st.fixed_dictionaries({}, optional=fields)
    full = st.fixed_dictionaries(fields)
    return st.one_of(full, full, present).flatmap(
        lambda d: st.dictionaries(st.text(max_size=8), json_values, max_size=2).map(
            lambda extra: {**extra, **d}
        )
    )


target = maybe_missing(
    {
        "repository": repository,
        "tag": tag,
        "digest": digest,
        "mediaType": media_type,
        "size": sometimes(st.integers(0, 10**9)),
        "length": sometimes(st.integers(0, 10**9)),
    }
)
request = maybe_missing(
    {"host": host, "id": sometimes(st.uuids().map(str)), "method": sometimes(st.just("PUT"))}
)
acr_data = sometimes(
    maybe_missing(
        {
            "id": sometimes(st.uuids().map(str)),
            "timestamp": timestamp,
            "action": sometimes(st.just("push")),
            "target": sometimes(target),
            "request": sometimes(request),
        }
    )
)


# Event Grid schema and CloudEvents schema, as Event Grid delivers them to the webhook.
eventgrid_event = maybe_missing(
    {
        "id": event_id,
        "topic": sometimes(st.just("/subscriptions/x/registries/r")),
        "subject": sometimes(st.just("app:1")),
        "eventType": event_type,
        "eventTime": timestamp,
        "data": acr_data,
        "dataVersion": sometimes(st.just("1.0")),
        "metadataVersion": sometimes(st.just("1")),
    }
)
cloud_event = maybe_missing(
    {
        "id": event_id,
        "source": sometimes(st.just("/subscriptions/x/registries/r")),
        "specversion": sometimes(st.just("1.0")),
        "type": event_type,
        "time": timestamp,
        "subject": sometimes(st.just("app:1")),
        "data": acr_data,
    }
)
any_grid_event = st.one_of(eventgrid_event, cloud_event, st.dictionaries(st.text(max_size=8), json_values))

# The CNCF distribution notification envelope.
distribution_event = maybe_missing(
    {
        "id": event_id,
        "timestamp": timestamp,
        "action": sometimes(st.sampled_from(["push", "pull", "mount", "delete"])),
        "target": sometimes(target),
        "request": sometimes(request),
    }
)
envelope = st.one_of(
    st.fixed_dictionaries({"events": st.lists(distribution_event, max_size=4)}),
    st.fixed_dictionaries({"events": st.lists(distribution_event, max_size=4)}),
    st.fixed_dictionaries({"events": json_values}),
    json_values,
)

# ---- image references -------------------------------------------------------------------------
reference_like = st.one_of(
    st.tuples(
        st.one_of(
            st.just(""), valid_host.map(lambda h: h + "/"), st.text(max_size=12).map(lambda h: h + "/")
        ),
        st.one_of(valid_repository, st.text(max_size=20), component.map(str.upper)),
        st.one_of(st.just(""), valid_tag.map(lambda t: ":" + t), st.text(max_size=10).map(lambda t: ":" + t)),
        st.one_of(
            st.just(""), valid_digest.map(lambda d: "@" + d), st.text(max_size=72).map(lambda d: "@" + d)
        ),
    ).map("".join),
    st.text(max_size=40),
    awkward,
    long_text,
    st.from_regex(r"[a-z0-9.:/@\[\]_-]{0,60}", fullmatch=True),
)

# ---- Dockerfiles ------------------------------------------------------------------------------
_words = st.one_of(
    st.sampled_from(
        [
            "node:9-alpine",
            "scratch",
            "base",
            "$BASE",
            "${BASE}",
            "${BASE:-alpine}",
            "${BASE:+x}",
            "${BASE#*/}",
            "${BASE%:*}",
            "${BASE/a/b}",
            "${BASE:?unset}",
            "${BASE",
            "${}",
            "$",
            '"$BASE"',
            "'x'",
            "\\$BASE",
            "localhost:5000/a/b:1",
            "a@sha256:" + "0" * 64,
            "--platform=$BUILDPLATFORM",
            "--platform=",
            "--platform",
            "--other=1",
            "AS",
            "as",
            "build",
            "0stage",
            "UPPER",
            "${TARGETARCH}",
            "[::1]:5000/x",
            "\\",
            "`",
            "<<EOF",
        ]
    ),
    reference_like,
    st.text(max_size=8),
)
_instruction = st.one_of(
    st.tuples(st.sampled_from(["FROM", "from", "From"]), st.lists(_words, max_size=4)).map(
        lambda t: " ".join([t[0], *t[1]])
    ),
    st.tuples(
        st.sampled_from(["ARG", "arg"]),
        st.lists(
            st.one_of(
                st.sampled_from(
                    ["BASE", "BASE=node", "BASE=", "=x", "BASE=${BASE}x", 'A="a b"', "TARGETARCH=arm"]
                ),
                _words,
            ),
            max_size=3,
        ),
    ).map(lambda t: " ".join([t[0], *t[1]])),
    st.sampled_from(
        [
            "RUN echo hi",
            "COPY . .",
            "ENV A=1",
            "WORKDIR /x",
            'CMD ["x"]',
            "ONBUILD FROM x",
            "RUN <<EOF\necho\nEOF",
            "# escape=`",
            "# syntax=docker/dockerfile:1",
            "# comment",
            "FROM \\\n  node",
            "MAINTAINER x",
            "HEALTHCHECK NONE",
            "UNKNOWN x",
            "",
            " ",
            "\\",
        ]
    ),
    st.text(max_size=20),
)
dockerfile_text = st.one_of(
    st.lists(_instruction, max_size=8).map("\n".join),
    st.lists(_instruction, max_size=8).map("\r\n".join),
    st.text(max_size=200),
    st.lists(_instruction, max_size=4).map(lambda lines: "\ufeff" + "\n".join(lines)),
)
build_args = st.dictionaries(
    st.sampled_from(["BASE", "TARGETARCH", "BUILDPLATFORM", "X", ""]) | st.text(max_size=5),
    st.one_of(_words, st.text(max_size=10)),
    max_size=3,
)


def fresh_name(prefix: str = "p") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


# ---- a real payload with a few of its values replaced or left out -------------------------------
def _paths(value, prefix=()) -> list[tuple]:
    found = [prefix]
    if isinstance(value, dict):
        for key, inner in value.items():
            found += _paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found += _paths(inner, (*prefix, index))
    return found


_DELETE = object()


def _apply(value, path: tuple, replacement):
    if not path:
        return value if replacement is _DELETE else replacement
    head, rest = path[0], path[1:]
    if isinstance(value, dict) and head in value:
        copy = dict(value)
        inner = _apply(value[head], rest, replacement)
        if inner is _DELETE or (not rest and replacement is _DELETE):
            copy.pop(head)
        else:
            copy[head] = inner
        return copy
    if isinstance(value, list) and isinstance(head, int) and head < len(value):
        copy = list(value)
        if not rest and replacement is _DELETE:
            copy.pop(head)
        else:
            copy[head] = _apply(value[head], rest, replacement)
        return copy
    return value


replacement_values = st.one_of(
    st.just(_DELETE), json_values, odd_text, not_text, digest, tag, repository, host, event_id, timestamp
)


def mutated(sample) -> st.SearchStrategy:
    """`sample` (a real payload) with up to three of its values replaced by odd ones or removed."""
    paths = _paths(sample)
    edits = st.lists(st.tuples(st.sampled_from(paths), replacement_values), max_size=3)
    return edits.map(lambda changes: _mutate(sample, changes))


def _mutate(sample, changes):
    value = sample
    for path, replacement in changes:
        value = _apply(value, path, replacement)
    return None if value is _DELETE else value
