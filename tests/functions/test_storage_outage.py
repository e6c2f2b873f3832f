"""When storage does not answer, the API says 503 with Retry-After (soon), not 500 after a minute.

The app's own functions are called as the host calls them, against storage that is really not
there (a closed port), so the storage SDK fails as it does in an outage.
"""

from __future__ import annotations

import azure.functions as func
import pytest

from functions import api, http
from shared.bootstrap import Services
from tests.conftest import AZURITE_KEY, unique_settings
from tests.functions.test_app import by_name

NOWHERE = "http://127.0.0.1:9/devstoreaccount1"  # the discard port: nothing listens there
DOWN = (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};"
        f"BlobEndpoint={NOWHERE};QueueEndpoint={NOWHERE};TableEndpoint={NOWHERE};")


@pytest.fixture
def storage_down(monkeypatch):
    services = Services(unique_settings(AzureWebJobsStorage=DOWN))
    monkeypatch.setattr(api, "services", lambda: services)


@pytest.mark.parametrize(("function", "method", "params", "route"), [
    ("api_runs", "GET", {}, {}),
    ("api_tasks", "GET", {}, {}),
    ("api_run", "GET", {}, {"run_id": "da1"}),
    ("api_run_log", "GET", {}, {"run_id": "da1"}),
    ("api_decisions", "GET", {}, {}),
])
def test_the_api_answers_503_with_retry_after_while_storage_is_down(storage_down, function, method,
                                                                   params, route):
    request = func.HttpRequest(method, f"/api/{function}", body=b"", params=params, route_params=route)
    answer = by_name()[function].user_function(request)
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == str(http.RETRY_AFTER_SECONDS)
    assert b"StorageUnavailable" in answer.get_body()
