"""Azure's scalability targets on a real Azurite (BASETRIGGER_SIMULATE_TARGETS): the wrapper answers
503 ServerBusy as the service does, the adapters ride it out with back-off, and dispatch still
queues exactly one run per dependent while being throttled.

The targets here are scaled down (a few entities per second) so that a handful of writes meets
them; what is asserted is what happened (refusals made, every write landed), never how long it took.
"""

from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError
from azure.data.tables import TableServiceClient

from shared.adapters.storage import Storage
from shared.adapters.throttling import ScalabilityTargets, ThrottledTransport
from shared.bootstrap import Services
from shared.config import StorageTargets
from shared.domain.vocabulary import Outcome
from tests.conftest import azurite_connection_string, unique_settings
from tests.integration.test_dispatch import add_dependents, push, queued_run_ids


@pytest.fixture
def throttled():
    services = Services(unique_settings(BASETRIGGER_SIMULATE_TARGETS="5,50,5"))
    yield services
    services.storage.drop_all()


def test_over_a_target_the_service_answers_server_busy():
    from azure.core.pipeline.transport import RequestsTransport

    targets = ScalabilityTargets(StorageTargets(partition=1, account=100, queue=1))
    transport = ThrottledTransport(RequestsTransport(), targets, "table")
    service = TableServiceClient.from_connection_string(azurite_connection_string(), transport=transport,
                                                        retry_total=0)
    table = service.get_table_client(unique_settings().table("busy"))
    service.create_table(table.table_name)
    try:
        table.upsert_entity({"PartitionKey": "p", "RowKey": "1"})
        with pytest.raises(HttpResponseError) as refused:
            table.upsert_entity({"PartitionKey": "p", "RowKey": "2"})
        assert refused.value.status_code == 503 and refused.value.error_code == "ServerBusy"
        table.upsert_entity({"PartitionKey": "other", "RowKey": "1"})  # another partition's budget
    finally:
        service.delete_table(table.table_name)


def test_the_adapters_retry_with_back_off_until_every_write_lands(throttled):
    storage: Storage = throttled.storage
    table = storage.table("runs")
    for n in range(12):  # over two seconds' worth of one partition at 5/s
        table.upsert_entity({"PartitionKey": "hot", "RowKey": str(n)})
    assert storage.targets is not None and storage.targets.refused > 0
    assert len(list(table.query_entities("PartitionKey eq 'hot'"))) == 12


def test_a_throttled_push_still_queues_one_run_per_dependent(throttled):
    add_dependents(throttled, 8)
    decision = throttled.dispatcher.handle(push())
    assert decision.outcome == Outcome.QUEUED and len(decision.runs) == 8
    assert throttled.storage.targets is not None and throttled.storage.targets.refused > 0
    assert set(queued_run_ids(throttled)) <= set(decision.runs)
    again = throttled.dispatcher.handle(push(event_id=decision.event_id))  # a redelivery adds nothing
    assert again.runs == decision.runs
    assert throttled.runs.allocate(1) == ["da9"]  # eight ids for eight runs, none burnt by retries
