"""The webhooks of Harbor, Docker Hub and GitHub on a host of this checkout: each route's own
authentication, the published sample payloads accepted, malformed ones refused with a 400."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest

from tests.conftest import unique_settings
from tests.own_host import own_host

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
HARBOR_AUTH = "Bearer harbor-test-secret"
GITHUB_SECRET = "github-test-secret"


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    settings = unique_settings()
    log = tmp_path_factory.mktemp("hooks") / "host.log"
    with own_host(log, BASETRIGGER_TABLE_PREFIX=settings.table_prefix,
                  BASETRIGGER_BUILD_QUEUE=settings.build_queue, BASETRIGGER_HARBOR_AUTH=HARBOR_AUTH,
                  BASETRIGGER_GITHUB_WEBHOOK_SECRET=GITHUB_SECRET) as running:
        yield running
    from shared.bootstrap import Services

    Services(settings).storage.drop_all()


def post(host, route: str, body: bytes, headers: dict[str, str], key: bool = False):
    session = host.api() if key else __import__("requests").Session()
    session.trust_env = False
    return session.post(f"{host.url}/api/{route}", data=body, headers=headers, timeout=30)


def test_harbor_needs_its_auth_header(host):
    body = (SAMPLES / "harbor-push-default.json").read_bytes()
    assert post(host, "hooks/harbor", body, {}).status_code == 401
    assert post(host, "hooks/harbor", body, {"Authorization": "Bearer nope"}).status_code == 401
    for sample in ("harbor-push-default.json", "harbor-push-cloudevents.json"):
        answer = post(host, "hooks/harbor", (SAMPLES / sample).read_bytes(), {"Authorization": HARBOR_AUTH})
        assert answer.status_code == 200, answer.text
        assert [d["outcome"] for d in answer.json()["decisions"]] == ["no-dependents"]
    bad = json.loads(body)
    bad["event_data"]["resources"][0]["digest"] = "sha256:xyz"
    refused = post(host, "hooks/harbor", json.dumps(bad).encode(), {"Authorization": HARBOR_AUTH})
    assert refused.status_code == 400 and "digest" in refused.json()["error"]["message"]


def test_github_needs_a_valid_signature(host):
    body = (SAMPLES / "github-registry-package-published.json").read_bytes()
    headers = {"X-GitHub-Event": "registry_package",
               "X-GitHub-Delivery": "7f6e5d4c-0000-4000-8000-000000000001"}
    assert post(host, "hooks/github", body, headers).status_code == 401
    wrong = "sha256=" + hmac.new(b"other", body, hashlib.sha256).hexdigest()
    assert post(host, "hooks/github", body, headers | {"X-Hub-Signature-256": wrong}).status_code == 401
    signature = "sha256=" + hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
    answer = post(host, "hooks/github", body, headers | {"X-Hub-Signature-256": signature})
    assert answer.status_code == 200, answer.text
    assert answer.json()["decisions"][0]["outcome"] == "no-dependents"


def test_dockerhub_needs_the_function_key_and_records_what_it_could_not_read(host):
    body = (SAMPLES / "dockerhub-push.json").read_bytes()
    assert post(host, "hooks/dockerhub", body, {}).status_code == 401
    answer = post(host, "hooks/dockerhub", body, {}, key=True)
    assert answer.status_code == 200, answer.text
    # No network here: Docker Hub cannot be asked for the digest, which the decision says.
    (decision,) = answer.json()["decisions"]
    assert decision["outcome"] == "registry-error"
    assert "docker.io/example/node-base:20-alpine" in decision["reason"]
    assert post(host, "hooks/dockerhub", b"{\"push_data\": {}}", {}, key=True).status_code == 400
