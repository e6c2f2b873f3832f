"""Container image references, normalized the way Docker normalizes them.

Every place basetrigger compares images (a Dockerfile's `FROM`, a registry push event, a task's
output image) goes through `ImageRef.parse`, so that `node`, `docker.io/node`,
`index.docker.io/library/node:latest` and `docker.io/library/node:latest` are the same key.

The grammar comes from `docker-image-py` (module `docker_image`), a port of Go's
`github.com/distribution/reference` that Docker itself uses: its `parse_normalized_named` is
`ParseNormalizedNamed` (domain detection, `docker.io/library/` for official images, IPv6 hosts
such as `[::1]:5000`, digest validation). On top of it this module adds what Docker does when it
pulls (`TagNameOnly`: a bare name means `:latest`), one exception type, and an immutable value
object.

It also turns references into Azure Table keys (`encode_key`): Table keys may not contain `/`,
which every normalized reference does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from docker_image import digest as _digest
from docker_image import reference as _reference

DEFAULT_TAG = "latest"

# Azure Table keys are at most 1 KiB, counted in UTF-16 (512 characters of ASCII, 256 emoji): refuse
# to build longer ones rather than fail at insert time.
MAX_KEY_LENGTH = 1024


# Keys are made of escaped references and event ids plus the tables' own prefixes and suffixes
# (`e|<id>`, `image|<reference>|<counter>`): what goes into one leaves this much room.
KEY_ROOM = 64


def key_size(key: str) -> int:
    """The bytes a key takes against MAX_KEY_LENGTH (Table Storage measures keys in UTF-16)."""
    return len(key.encode("utf-16-le", "surrogatepass"))


def fits_a_key(text: str) -> bool:
    """Can `text`, escaped (encode_key), be part of a table key, with room for the tables' own?"""
    try:
        return key_size(encode_key(text)) <= MAX_KEY_LENGTH - KEY_ROOM
    except ValueError:
        return False


class InvalidReference(ValueError):
    """The text is not a valid image reference; the message names the text and the reason."""

    def __init__(self, text: str, reason: str):
        super().__init__(f"invalid image reference {text!r}: {reason}")
        self.text = text
        self.reason = reason


@dataclass(frozen=True)
class ImageRef:
    """A normalized image reference: `registry/repository[:tag][@digest]`.

    `parse` always fills `tag` or `digest` (or both): a bare name gets the tag `latest`, a name
    with only a digest keeps no tag, as Docker does.
    """

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> ImageRef:
        """Parse and normalize `text` (`node` -> `docker.io/library/node:latest`)."""
        if not isinstance(text, str):
            raise InvalidReference(repr(text), "a reference must be a string")
        # The ported regexes end in `$`, which in Python also matches before a final newline;
        # Go's does not, so refuse it here rather than store a key with a newline in it.
        if text.endswith("\n"):
            raise InvalidReference(text, "invalid reference format")
        try:
            parsed = _reference.Reference.parse_normalized_named(text)
        except (_reference.InvalidReference, _digest.InvalidDigest) as exc:
            raise InvalidReference(text, str(exc) or "invalid reference format") from None
        tag = parsed["tag"]
        digest = parsed["digest"]
        if tag is None and digest is None:
            tag = DEFAULT_TAG
        return cls(parsed.domain(), parsed.path(), tag, digest)

    @property
    def name(self) -> str:
        """`registry/repository`, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


# Characters Azure Table Storage forbids in PartitionKey/RowKey (`/ \ # ?`, control characters),
# plus `%` itself so the escaping can be undone.
_KEY_UNSAFE = re.compile(r"[/\\#?%\x00-\x1f\x7f-\x9f]")


def encode_key(ref: str) -> str:
    """Turn a (normalized) reference string into a legal Azure Table PartitionKey/RowKey.

    Each forbidden character and `%` becomes `%XX` (uppercase hex), everything else is kept.
    The encoding works character by character, so `encode_key(a + b) == encode_key(a) +
    encode_key(b)`: all keys of one repository share the prefix `encode_key(name + ":")`, which
    is what a key-range query needs. Raises ValueError when the key would exceed 1 KiB.
    """
    key = _KEY_UNSAFE.sub(lambda m: f"%{ord(m.group()):02X}", ref)
    if key_size(key) > MAX_KEY_LENGTH:
        raise ValueError(f"table key for {ref!r} would be longer than {MAX_KEY_LENGTH} bytes")
    return key
