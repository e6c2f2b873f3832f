"""The registry access module through its transports: no network, real clients.

- ACR: a real `azure.containerregistry.ContainerRegistryClient` (as shared/adapters/registry_acr.py
  builds it) sends real HTTP requests into a canned azure-core transport that answers as ACR does:
  the challenge, `/oauth2/exchange` (Entra ID token -> ACR refresh token), `/oauth2/token`
  (refresh -> access token), then the manifest. The assertions read the requests.
- Every other registry: the real DistributionClient on a requests session whose adapter answers as
  a distribution registry, Docker Hub's token service, or a registry that rate-limits.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import requests
import urllib3
from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import RequestsTransport

from shared.adapters.registry import RegistryClient
from shared.adapters.registry_acr import AcrClient
from shared.adapters.registry_distribution import DistributionClient, parse_challenge, parse_retry_after
from shared.domain.credentials import RegistryCredential
from shared.domain.manifests import Failure, RegistryError

INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
AMD64 = "sha256:" + "a" * 64
ARM64 = "sha256:" + "b" * 64
INDEX = json.dumps({"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": [
    {"mediaType": MANIFEST_TYPE, "digest": AMD64, "size": 1,
     "platform": {"os": "linux", "architecture": "amd64"}},
    {"mediaType": MANIFEST_TYPE, "digest": ARM64, "size": 1,
     "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
    {"mediaType": MANIFEST_TYPE, "digest": "sha256:" + "c" * 64, "size": 1,
     "platform": {"os": "unknown", "architecture": "unknown"}},
]}).encode()
INDEX_DIGEST = "sha256:" + hashlib.sha256(INDEX).hexdigest()


class Wire(requests.adapters.BaseAdapter):
    """A requests transport whose other end is `answer(method, url, headers, body)`; records requests."""

    def __init__(self, answer):
        super().__init__()
        self.answer = answer
        self.requests: list[dict] = []

    def send(self, request, **kwargs):
        body = request.body or b""
        if hasattr(body, "read"):
            body = body.read()
        body = body.encode() if isinstance(body, str) else bytes(body)
        self.requests.append({"method": request.method, "url": request.url, "headers": dict(request.headers),
                              "body": body})
        status, headers, content = self.answer(request.method, request.url, request.headers, body)
        # A real urllib3 response under requests' own response builder, as a socket would give.
        raw = urllib3.HTTPResponse(body=io.BytesIO(b"" if request.method == "HEAD" else content),
                                   headers=headers, status=status, preload_content=False,
                                   decode_content=False, reason="canned")
        return requests.adapters.HTTPAdapter().build_response(request, raw)

    def close(self):
        pass


def session_on(wire: Wire) -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.mount("https://", wire)
    return session


class StubCredential:
    def __init__(self):
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes, **kwargs):
        self.scopes.append(scopes)
        return AccessToken("entra-token", int(time.time()) + 3600)


# ---- ACR with the managed identity ----------------------------------------------------------------
def acr_answer(method, url, headers, body):
    path = unquote(urlsplit(url).path)  # the SDK sends the repository name %-encoded
    if path == "/oauth2/exchange":
        return 200, {"Content-Type": "application/json"}, b'{"refresh_token": "acr-refresh"}'
    if path == "/oauth2/token":
        return 200, {"Content-Type": "application/json"}, json.dumps({"access_token": "acr-access"}).encode()
    if path == "/v2/base/node/manifests/20":
        if headers.get("Authorization") != "Bearer acr-access":
            return 401, {"WWW-Authenticate": 'Bearer realm="https://contoso.azurecr.io/oauth2/token",'
                         'service="contoso.azurecr.io",scope="repository:base/node:pull"'}, b""
        return 200, {"Content-Type": INDEX_TYPE, "Docker-Content-Digest": INDEX_DIGEST,
                     "Content-Length": str(len(INDEX))}, INDEX
    return 404, {"Content-Type": "application/json"}, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}'


def acr_client(wire: Wire, credential, audience="https://containerregistry.azure.net") -> AcrClient:
    return AcrClient(credential, audience, transport=RequestsTransport(session=session_on(wire),
                                                                       session_owner=False), retry_total=0)


def test_acr_signs_in_with_the_managed_identity_and_reads_a_platform_digest():
    wire, credential = Wire(acr_answer), StubCredential()
    registry = RegistryClient(acr=lambda: acr_client(wire, credential))
    assert registry.resolve_digest("contoso.azurecr.io/base/node:20", "linux/arm64") == ARM64
    assert registry.resolve_digest("contoso.azurecr.io/base/node:20", "linux") == AMD64
    assert registry.resolve_digest("contoso.azurecr.io/base/node:20") == INDEX_DIGEST
    assert credential.scopes[0] == ("https://containerregistry.azure.net/.default",)
    exchange = next(r for r in wire.requests if urlsplit(r["url"]).path == "/oauth2/exchange")
    form = parse_qs(exchange["body"].decode())
    assert form["grant_type"] == ["access_token"] and form["access_token"] == ["entra-token"]
    assert form["service"] == ["contoso.azurecr.io"]
    token = next(r for r in wire.requests if urlsplit(r["url"]).path == "/oauth2/token")
    assert parse_qs(token["body"].decode())["scope"] == ["repository:base/node:pull"]
    reads = [r for r in wire.requests if "/manifests/" in r["url"]]
    assert reads[-1]["headers"]["Authorization"] == "Bearer acr-access"


def test_acr_audience_is_configurable_for_other_clouds():
    wire, credential = Wire(acr_answer), StubCredential()
    acr = acr_client(wire, credential, audience="https://management.usgovcloudapi.net")
    acr.inspect("contoso.azurecr.io/base/node:20")
    assert credential.scopes[0] == ("https://management.usgovcloudapi.net/.default",)


def test_acr_errors_are_typed():
    wire = Wire(acr_answer)
    acr = acr_client(wire, StubCredential())
    with pytest.raises(RegistryError) as missing:
        acr.inspect("contoso.azurecr.io/base/node:21")
    assert missing.value.failure == Failure.NOT_FOUND


# ---- any other registry: the distribution token flow ---------------------------------------------
def hub_answer(method, url, headers, body):
    parts = urlsplit(url)
    if parts.netloc == "auth.docker.io":
        query = parse_qs(parts.query)
        assert query["scope"] == ["repository:library/node:pull"]
        assert query["service"] == ["registry.docker.io"]
        return 200, {}, json.dumps({"token": "hub-token", "expires_in": 300}).encode()
    assert parts.netloc == "registry-1.docker.io", "Docker Hub is asked at its API host"
    if headers.get("Authorization") != "Bearer hub-token":
        return 401, {"WWW-Authenticate": 'Bearer realm="https://auth.docker.io/token",'
                     'service="registry.docker.io",scope="repository:library/node:pull"'}, b""
    if method == "HEAD":
        return 200, {"Content-Type": INDEX_TYPE, "Docker-Content-Digest": INDEX_DIGEST}, b""
    return 200, {"Content-Type": INDEX_TYPE, "Docker-Content-Digest": INDEX_DIGEST}, INDEX


def test_docker_hub_anonymous_token_library_names_and_a_platform_of_an_index():
    wire = Wire(hub_answer)
    client = DistributionClient(session=session_on(wire))
    info = client.inspect("node:20", with_platforms=True)
    assert info.digest == INDEX_DIGEST and info.is_index
    assert info.platforms == {"linux/amd64": AMD64, "linux/arm64": ARM64}
    assert info.digest_for("linux/arm64/v8") == ARM64 and info.digest_for("linux") == AMD64
    # The token is kept: a second read is one request.
    before = len(wire.requests)
    assert client.inspect("docker.io/library/node:20").digest == INDEX_DIGEST
    assert len(wire.requests) == before + 1 and wire.requests[-1]["method"] == "HEAD"


def test_basic_credentials_buy_the_token_and_a_refusal_says_whose():
    def answer(method, url, headers, body):
        parts = urlsplit(url)
        if parts.path == "/token":
            ok = headers.get("Authorization") == requests.auth._basic_auth_str("ci", "s3cret")
            return (200, {}, b'{"access_token": "t1"}') if ok else (401, {}, b"")
        if headers.get("Authorization") != "Bearer t1":
            challenge = 'Bearer realm="https://quay.example/token",service="quay.example"'
            return 401, {"WWW-Authenticate": challenge}, b""
        return 200, {"Content-Type": MANIFEST_TYPE, "Docker-Content-Digest": AMD64}, b""

    wire = Wire(answer)
    client = DistributionClient(session=session_on(wire))
    good = RegistryCredential.create("quay.example", "ci", "s3cret")
    assert client.inspect("quay.example/team/base:1", good).digest == AMD64
    wrong = RegistryCredential.create("quay.example", "ci", "bad-pw-7")
    with pytest.raises(RegistryError) as refused:
        client.inspect("quay.example/team/base:1", wrong)
    assert refused.value.failure == Failure.UNAUTHORIZED
    message = str(refused.value)
    assert "refused the credentials of user 'ci'" in message and "bad-pw-7" not in message


def test_429_and_retry_after_are_honoured():
    calls = []

    def answer(method, url, headers, body):
        calls.append(url)
        if len(calls) == 1:
            return 429, {"Retry-After": "0"}, b""
        return 200, {"Content-Type": MANIFEST_TYPE, "Docker-Content-Digest": AMD64}, b""

    client = DistributionClient(session=session_on(Wire(answer)))
    with pytest.raises(RegistryError) as limited:
        client.inspect("registry.example/app:1")
    assert limited.value.failure == Failure.RATE_LIMITED and limited.value.retry_after == 0
    # resolve_digest (interactive) waits a short Retry-After once, then asks again.
    calls.clear()
    registry = RegistryClient(distribution=DistributionClient(session=session_on(Wire(answer))))
    assert registry.resolve_digest("registry.example/app:1") == AMD64 and len(calls) == 2


def test_a_malformed_digest_from_a_registry_is_refused():
    def answer(method, url, headers, body):
        return 200, {"Content-Type": MANIFEST_TYPE, "Docker-Content-Digest": "sha256:xyz"}, b""

    with pytest.raises(RegistryError, match="malformed digest"):
        DistributionClient(session=session_on(Wire(answer))).inspect("registry.example/app:1")


def test_challenges_and_retry_after_parse():
    scheme, params = parse_challenge('Bearer realm="https://a/t",service="s",scope="repository:a/b:pull,push"')
    assert scheme == "bearer" and params["scope"] == "repository:a/b:pull,push"
    assert parse_retry_after("120") == 120 and parse_retry_after(None) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0
