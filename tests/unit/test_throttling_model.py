"""The scalability-target model (shared/adapters/throttling.py) without a network: what a request
costs and where, and the token buckets on a clock the test moves."""

from __future__ import annotations

import json

import pytest
from azure.core.pipeline.transport import HttpRequest

from shared.adapters.throttling import ScalabilityTargets, _operations, _table_partition
from shared.config import ConfigError, StorageTargets, load

AZURITE = "http://127.0.0.1:10002/devstoreaccount1"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("request_", "expected"), [
    (HttpRequest("PATCH", f"{AZURITE}/btruns(PartitionKey='a%25b%27%27c',RowKey='r1')"), ("btruns", "a%b'c")),
    (HttpRequest("GET", f"{AZURITE}/btruns()?$filter=PartitionKey%20eq%20%27run%27%20and%20x"),
     ("btruns", "run")),
    (HttpRequest("GET", f"{AZURITE}/btruns()?$filter=RowKey%20eq%20%27x%27"), None),
    (HttpRequest("POST", f"{AZURITE}/Tables", data=json.dumps({"TableName": "t"})), None),
    (HttpRequest("POST", "https://acct.table.core.windows.net/btruns",
                 data=json.dumps({"PartitionKey": "p1", "RowKey": "r"})), ("btruns", "p1")),
])
def test_the_partition_a_table_request_touches(request_, expected):
    assert _table_partition(request_) == expected


def test_a_transaction_costs_one_per_operation():
    changeset = HttpRequest("POST", "")
    changeset.set_multipart_mixed(*[HttpRequest("PATCH", f"{AZURITE}/t(PartitionKey='p',RowKey='{n}')")
                                     for n in range(3)])
    batch = HttpRequest("POST", f"{AZURITE}/$batch")
    batch.set_multipart_mixed(changeset)
    operations = _operations(batch)
    assert len(operations) == 3 and _table_partition(operations[0]) == ("t", "p")


def test_a_partition_refills_at_its_rate_and_others_are_untouched():
    clock = Clock()
    buckets = ScalabilityTargets(StorageTargets(partition=10, account=100, queue=10), clock)
    assert all(buckets.admit(1, partition="t/a") for _ in range(10))  # a second's worth of burst
    assert not buckets.admit(1, partition="t/a") and buckets.refused == 1
    assert buckets.admit(1, partition="t/b")  # another partition has its own budget
    clock.now = 0.5
    assert sum(buckets.admit(1, partition="t/a") for _ in range(10)) == 5


def test_the_account_caps_every_partition_together():
    clock = Clock()
    buckets = ScalabilityTargets(StorageTargets(partition=10, account=15, queue=10), clock)
    admitted = sum(buckets.admit(1, partition=f"t/{n % 4}") for n in range(40))
    assert admitted == 15


def test_a_transaction_larger_than_a_seconds_budget_still_goes_through_in_debt():
    clock = Clock()
    buckets = ScalabilityTargets(StorageTargets(partition=50, account=1000, queue=10), clock)
    assert buckets.admit(100, partition="t/p")  # a full bucket takes it, and owes the rest
    clock.now = 1.0
    assert not buckets.admit(1, partition="t/p")  # the debt is paid back first
    clock.now = 3.0
    assert buckets.admit(1, partition="t/p")


def test_the_setting():
    emulator = "UseDevelopmentStorage=true"
    assert load({"AzureWebJobsStorage": emulator}).storage.simulate_targets is None
    on = load({"AzureWebJobsStorage": emulator, "BASETRIGGER_SIMULATE_TARGETS": "on"}).storage
    assert on.simulate_targets == StorageTargets(2000, 20000, 2000)
    scaled = load({"AzureWebJobsStorage": emulator, "BASETRIGGER_SIMULATE_TARGETS": "20,200,20"}).storage
    assert scaled.simulate_targets == StorageTargets(20, 200, 20)
    with pytest.raises(ConfigError, match="three positive numbers"):
        load({"AzureWebJobsStorage": emulator, "BASETRIGGER_SIMULATE_TARGETS": "fast"})
