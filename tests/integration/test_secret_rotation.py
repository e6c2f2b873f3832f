"""Key rotation of the sealed secrets in the tasks table, on the stack's real Azurite.

BASETRIGGER_SECRET_KEY may hold several keys: the first encrypts, all decrypt. `reseal_secrets`
re-encrypts every task's secrets with the first key, after which the old key can be dropped.
"""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from shared.adapters.secret_box import SecretBox, SecretsUnavailable, fingerprint
from shared.adapters.storage import Storage
from shared.adapters.task_table import TableTaskRepository
from shared.domain.tasks import Task
from tests.conftest import unique_settings

OLD, NEW, STRANGER = (Fernet.generate_key().decode() for _ in range(3))


def task(name: str, **fields) -> Task:
    return Task(name=name, images=[f"{name}:{{{{.Run.ID}}}}"], context="https://example.invalid/r.git",
                **fields)


@pytest.fixture
def storage():
    storage = Storage(unique_settings())
    yield storage
    storage.drop_all()


def store(storage: Storage, keys: str, box: type[SecretBox] = SecretBox) -> TableTaskRepository:
    return TableTaskRepository(storage, box(keys))


def raw_sealed(storage: Storage, name: str) -> str:
    return storage.table("tasks").get_entity("task", name)["SealedSecrets"]


def test_rotation_reseals_with_the_new_key_so_the_old_one_can_be_dropped(storage):
    before = store(storage, OLD)
    before.create(task("app", secret_args={"NPM_TOKEN": "npm-s3cr3t"}, git_token="ghp_t0ken"))
    before.create(task("plain"))  # no secrets: nothing to reseal
    store(storage, STRANGER).create(task("foreign", secret_args={"X": "sealed-with-a-lost-key"}))
    foreign_before = raw_sealed(storage, "foreign")

    # Step 1: the new key goes first; the old one still decrypts.
    rotating = store(storage, f"{NEW}, {OLD}")
    assert rotating.get("app").secret_args == {"NPM_TOKEN": "npm-s3cr3t"}

    report = rotating.reseal_secrets()

    assert report.resealed == ["app"]
    assert report.current == [] and report.busy == []
    assert report.unreadable == ["foreign"]  # reported, and left exactly as it was
    assert raw_sealed(storage, "foreign") == foreign_before
    assert report.primary_key == fingerprint(NEW) and report.keys == 2
    assert NEW not in str(report.to_dict()) and OLD not in str(report.to_dict())

    # Step 2: the old key is dropped; everything it sealed is readable with the new one alone.
    after = store(storage, NEW)
    app = after.get("app")
    assert app.secret_args == {"NPM_TOKEN": "npm-s3cr3t"} and app.git_token == "ghp_t0ken"
    assert after.get("plain").secret_args == {}
    with pytest.raises(SecretsUnavailable):
        store(storage, OLD).get("app")

    # A second run finds nothing left to do.
    again = store(storage, f"{NEW},{OLD}").reseal_secrets()
    assert (again.resealed, again.current, again.unreadable) == ([], ["app"], ["foreign"])


def test_a_task_changed_while_it_is_resealed_is_read_again_not_overwritten(storage):
    store(storage, OLD).create(task("app", secret_args={"TOKEN": "first"}))
    writer = store(storage, f"{NEW},{OLD}")

    class Interleaved(SecretBox):
        """Between reading the row and writing it back, someone else changes the task's secret."""

        changed = False

        def reseal(self, sealed: str) -> str:
            resealed = super().reseal(sealed)
            if not Interleaved.changed:
                Interleaved.changed = True
                updated = writer.get("app")
                updated.secret_args = {"TOKEN": "second"}
                writer.save(updated)
            return resealed

    report = store(storage, f"{NEW},{OLD}", Interleaved).reseal_secrets()

    assert Interleaved.changed
    assert report.current == ["app"] and report.resealed == []  # the change was sealed with NEW
    assert store(storage, NEW).get("app").secret_args == {"TOKEN": "second"}  # and it was kept

