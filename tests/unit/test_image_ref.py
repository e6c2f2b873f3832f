"""Image reference normalization, checked against distribution/reference's own test vectors.

The valid/invalid names and the domain/path splits below are the cases of
distribution/reference's normalize_test.go and reference_test.go (the library Docker uses),
restated as normalized strings.
"""

import re

import pytest

from shared.domain.image_ref import MAX_KEY_LENGTH, ImageRef, InvalidReference, encode_key


def normalize(text: str) -> str:
    return str(ImageRef.parse(text))

D64 = "sha256:" + "f" * 64
D128 = "sha512:" + "f" * 128


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Docker Hub familiar names.
        ("node", "docker.io/library/node:latest"),
        ("node:18", "docker.io/library/node:18"),
        ("library/node", "docker.io/library/node:latest"),
        ("user/x", "docker.io/user/x:latest"),
        ("docker.io/node", "docker.io/library/node:latest"),
        ("docker.io/library/node:latest", "docker.io/library/node:latest"),
        ("index.docker.io/node", "docker.io/library/node:latest"),
        ("index.docker.io/user/x:1", "docker.io/user/x:1"),
        ("library/foo/bar", "docker.io/library/foo/bar:latest"),
        ("store/foo/bar", "docker.io/store/foo/bar:latest"),
        ("other/library", "docker.io/other/library:latest"),
        ("test_com/foo", "docker.io/test_com/foo:latest"),
        # No slash: never a registry, even when it looks like one (Docker's FIXME).
        ("localhost", "docker.io/library/localhost:latest"),
        ("test.com:5000", "docker.io/library/test.com:5000"),
        ("192.168.0.1", "docker.io/library/192.168.0.1:latest"),
        ("192.168.0.1:80", "docker.io/library/192.168.0.1:80"),
        # Registries: localhost, dots, ports, uppercase first component.
        ("localhost/x", "localhost/x:latest"),
        ("localhost:5000/x:1", "localhost:5000/x:1"),
        ("localhost:5000/a/b:1", "localhost:5000/a/b:1"),
        ("test:5000/repo", "test:5000/repo:latest"),
        ("test-com:8080/foo", "test-com:8080/foo:latest"),
        ("example.com/private/moonbase", "example.com/private/moonbase:latest"),
        ("example.com:8000/privatebase", "example.com:8000/privatebase:latest"),
        ("127.0.0.1:8000/private/moonbase", "127.0.0.1:8000/private/moonbase:latest"),
        ("192.168.1.1/repo", "192.168.1.1/repo:latest"),
        ("192.168.1.1:5000/repo:5050", "192.168.1.1:5000/repo:5050"),
        ("xn--n3h.com:18080/foo", "xn--n3h.com:18080/foo:latest"),
        ("b.gcr.io/test.example.com/my-app:test.example.com",
         "b.gcr.io/test.example.com/my-app:test.example.com"),
        ("Foo/bar", "Foo/bar:latest"),
        ("FOO/bar", "FOO/bar:latest"),
        ("myregistry.azurecr.io/team/app:v1", "myregistry.azurecr.io/team/app:v1"),
        # IPv6 hosts.
        ("[::1]:5000/x", "[::1]:5000/x:latest"),
        ("[::1]/x", "[::1]/x:latest"),
        ("[2001:db8::1]/repo", "[2001:db8::1]/repo:latest"),
        ("[2001:db8::]:5000/repo", "[2001:db8::]:5000/repo:latest"),
        ("[fc00:1:2:3:4:5:6:7]:5000/library/debian", "[fc00:1:2:3:4:5:6:7]:5000/library/debian:latest"),
        ("[2001:db8::1]:5000/repo:tag", "[2001:db8::1]:5000/repo:tag"),
        # Tags keep their case; name components may use separators.
        ("lowercase:Uppercase", "docker.io/library/lowercase:Uppercase"),
        ("docker---rules/docker", "docker.io/docker---rules/docker:latest"),
        ("dock__er/docker", "docker.io/dock__er/docker:latest"),
        ("d/docker", "docker.io/d/docker:latest"),
        ("ubuntu-12.04-base", "docker.io/library/ubuntu-12.04-base:latest"),
        ("thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
         "docker.io/library/thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev:latest"),
        # 64 hex characters are fine with a registry in front.
        ("docker.io/1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
         "docker.io/library/1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a:latest"),
        # Digests: kept; a digest alone gets no tag; tag and digest are both kept.
        (f"x@{D64}", f"docker.io/library/x@{D64}"),
        (f"x:1@{D64}", f"docker.io/library/x:1@{D64}"),
        (f"busybox:latest@{D64}", f"docker.io/library/busybox:latest@{D64}"),
        (f"test:5000/repo@{D64}", f"test:5000/repo@{D64}"),
        (f"[2001:db8::1]:5000/repo:tag@{D64}", f"[2001:db8::1]:5000/repo:tag@{D64}"),
        (f"xn--7o8h.com/myimage:xn--7o8h.com@{D128}", f"xn--7o8h.com/myimage:xn--7o8h.com@{D128}"),
    ],
)
def test_normalizes_like_docker(text, expected):
    assert str(ImageRef.parse(text)) == expected
    assert normalize(text) == expected
    # Normalization is idempotent: the normalized form parses to the same value.
    assert ImageRef.parse(expected) == ImageRef.parse(text)


@pytest.mark.parametrize(
    ("text", "registry", "repository"),
    [
        ("test.com/foo", "test.com", "foo"),
        ("test_com/foo", "docker.io", "test_com/foo"),
        ("docker/migrator", "docker.io", "docker/migrator"),
        ("test.com:8080/foo", "test.com:8080", "foo"),
        ("foo", "docker.io", "library/foo"),
        ("docker.io/library/foo/bar", "docker.io", "library/foo/bar"),
        ("[::1]:5000/a/b", "[::1]:5000", "a/b"),
        ("Foo/bar", "Foo", "bar"),
    ],
)
def test_splits_registry_and_repository(text, registry, repository):
    ref = ImageRef.parse(text)
    assert (ref.registry, ref.repository) == (registry, repository)
    assert ref.name == f"{registry}/{repository}"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "https://github.com/docker/docker",
        "docker/Docker",
        "Node",
        "Uppercase:tag",
        "user/Foo",
        "docker.io/docker/Docker",
        "test:5000/Uppercase/lowercase:tag",
        "-docker",
        "-docker/docker",
        "-docker.io/docker/docker",
        "docker-/docker",
        "-docker-/docker",
        "docker///docker",
        "docker.io/docker///docker",
        "____/____",
        "_docker/_docker",
        "dock..er/docker",
        "dock_.er/docker",
        "dock-.er/docker",
        "docker/",
        ":justtag",
        "x:",
        "x:-tag",
        "x:" + "a" * 129,
        "aa/asdf$$^/aa",
        "test image:1",
        " node",
        "node ",
        "node\n",
        "node\t",
        "private@registry:5000/test",
        "registry:port/namespace/test:1",
        "namespace/test:image:1",
        # IPv6: brackets required, no bare host, no zones, no embedded IPv4.
        "[fc00::1]",
        "[fc00::1]:5000",
        "[2001:db8::1]:tag",
        "fc00::1:5000/debian",
        "[fe80::1%eth0]:5000/debian",
        "[fe80::1%@invalidzone]:5000/repo",
        "[2001:db8:3:4::192.0.2.33]:5000/debian",
        # A bare 64-hex string is an image ID, not a name.
        "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
        # Digests: well formed, known algorithm, right length, lowercase hex.
        "@" + D64,
        "repo@sha256:" + "f" * 34,
        "repo@sha256:",
        "repo@invaliddigest:" + "f" * 64,
        "repo@sha256:" + "F" * 64,
        "repo@sha256:" + "f" * 65,
        # Repository path longer than 255 characters.
        "a/" * 128 + "a:tag",
        "this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_" * 4 + "/docker",
    ],
)
def test_rejects_invalid_references(text):
    with pytest.raises(InvalidReference) as info:
        ImageRef.parse(text)
    # The message names the offending input.
    assert repr(text) in str(info.value)
    assert info.value.text == text


def test_invalid_reference_is_a_value_error_with_reason():
    with pytest.raises(ValueError, match="must be lowercase"):
        ImageRef.parse("Node:1")


def test_non_string_is_invalid():
    with pytest.raises(InvalidReference):
        ImageRef.parse(None)  # type: ignore[arg-type]


def test_path_of_exactly_255_characters_is_valid():
    ref = ImageRef.parse("a/" * 127 + "a:tag-puts-this-over-max")
    assert len(ref.repository) == 255
    assert ref.registry == "docker.io"


def test_fields():
    assert ImageRef.parse("localhost:5000/a/b:1") == ImageRef("localhost:5000", "a/b", "1", None)
    digest_only = ImageRef.parse(f"x@{D64}")
    assert (digest_only.tag, digest_only.digest) == (None, D64)
    assert str(ImageRef.parse(f"x:1@{D64}")) == f"docker.io/library/x:1@{D64}"


def test_refs_are_hashable_values():
    assert len({ImageRef.parse("node"), ImageRef.parse("docker.io/library/node:latest")}) == 1
    with pytest.raises(AttributeError):
        ImageRef.parse("node").tag = "x"  # type: ignore[misc]


# --- table keys -------------------------------------------------------------------------------

FORBIDDEN_IN_TABLE_KEYS = set("/\\#?") | {chr(c) for c in range(0x20)} | {chr(c) for c in range(0x7F, 0xA0)}


@pytest.mark.parametrize(
    "ref",
    [
        "docker.io/library/node:latest",
        "localhost:5000/a/b:1",
        "[::1]:5000/x:latest",
        f"docker.io/library/x:1@{D64}",
        "weird/\\#?%\x00\x1f\x7f\x9f end",
        "100%/sure",
        "",
    ],
)
def test_encode_key_is_legal(ref):
    key = encode_key(ref)
    assert not set(key) & FORBIDDEN_IN_TABLE_KEYS
    assert re.sub(r"%([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), key) == ref


def test_encode_key_examples():
    assert encode_key("docker.io/library/node:latest") == "docker.io%2Flibrary%2Fnode:latest"
    assert encode_key("a%2Fb") == "a%252Fb"
    assert encode_key("a\\b#c?d") == "a%5Cb%23c%3Fd"


def test_encode_key_preserves_prefixes_for_range_queries():
    name = "localhost:5000/a/b"
    prefix = encode_key(name + ":")
    for ref in ("localhost:5000/a/b:1", "localhost:5000/a/b:latest"):
        assert encode_key(ref).startswith(prefix)
    assert not encode_key("localhost:5000/a/bc:1").startswith(prefix)


def test_encode_key_is_injective_on_tricky_pairs():
    pairs = [("a/b", "a%2Fb"), ("a%", "a%25"), ("%2F", "/")]
    for left, right in pairs:
        assert encode_key(left) != encode_key(right)


def test_encode_key_refuses_keys_over_one_kib():
    # Table Storage counts a key's 1 KiB in UTF-16: 512 ASCII characters, 256 emoji (Azurite and
    # Azure refuse a 513th character with 400 InvalidInput).
    encode_key("a" * (MAX_KEY_LENGTH // 2))
    encode_key("\U0001F600" * (MAX_KEY_LENGTH // 4))
    with pytest.raises(ValueError, match="1024"):
        encode_key("a" * (MAX_KEY_LENGTH // 2 + 1))
    with pytest.raises(ValueError):
        encode_key("\U0001F600" * (MAX_KEY_LENGTH // 4) + "a")
    with pytest.raises(ValueError):
        encode_key("/" * 200)  # 600 characters once escaped
