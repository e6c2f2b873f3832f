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


def test_a_dockerhub_push_no_table_can_key_is_refused_before_docker_hub_is_asked(host):
    # 120 path components: a valid repository name (239 characters), but each `/` takes three
    # characters in a table key, so no task can be indexed under it. Refused when read (400, a
    # rejected decision), not dispatched after a registry request for its digest.
    body = json.loads((SAMPLES / "dockerhub-push.json").read_bytes())
    body["repository"]["repo_name"] = "/".join(["a"] * 120)
    answer = post(host, "hooks/dockerhub", json.dumps(body).encode(), {}, key=True)
    assert answer.status_code == 400, answer.text
    assert "table key" in answer.json()["error"]["message"]


# Python refuses to turn more than 4,300 digits into an int (a ValueError, not a JSONDecodeError).
BIG_NUMBER = b'{"n": ' + b"7" * 5000 + b"}"
# Every route that reads a JSON body (functions/http.py json_body or parse_json).
JSON_ROUTES = [("POST", "tasks"), ("PATCH", "tasks/x"), ("POST", "tasks/x/runs"), ("POST", "builds"),
               ("POST", "tasks/x/credentials"), ("PATCH", "tasks/x/credentials"), ("POST", "bases/rebuild"),
               ("POST", "hooks/distribution"), ("POST", "hooks/dockerhub")]


@pytest.mark.parametrize("body", [BIG_NUMBER, b"[" + b"9" * 5000 + b"]", b"-" + b"1" * 5000])
def test_a_number_too_long_for_python_gets_a_4xx_on_every_json_route(host, body):
    session = host.api()
    for method, route in JSON_ROUTES:
        answer = session.request(method, f"{host.url}/api/{route}", data=body, timeout=30)
        assert answer.status_code == 400, (route, answer.status_code, answer.text[:200])
    harbor = post(host, "hooks/harbor", body, {"Authorization": HARBOR_AUTH})
    assert harbor.status_code == 400, harbor.text[:200]
    signature = "sha256=" + hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
    github = post(host, "hooks/github", body, {"X-GitHub-Event": "registry_package",
                                               "X-GitHub-Delivery": "7f6e5d4c-0000-4000-8000-00000000f00d",
                                               "X-Hub-Signature-256": signature})
    assert github.status_code == 400, github.text[:200]
    for event_type in ("Notification", "SubscriptionValidation"):
        eventgrid = session.post(f"{host.url}/runtime/webhooks/eventgrid",
                                 params={"functionName": "eventgrid_image_pushed"},
                                 headers={"aeg-event-type": event_type}, data=body, timeout=30)
        assert eventgrid.status_code == 400, (event_type, eventgrid.text[:200])
