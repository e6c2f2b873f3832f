"""The answers' models (functions/bodies.py), of which the OpenAPI document is made, describe what
the service layer's `to_dict` methods give: on in-memory fakes, every answer of each kind holds
only fields its model names, at every depth, and validates against it. A field added or renamed on
one side and not the other fails here (the Run answer's builder_run_id and unsent_since did)."""

from __future__ import annotations

import typing
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from functions import bodies
from shared.domain.credentials import RegistryCredential
from shared.domain.tasks import Dependency, Task
from shared.domain.timers import TaskTimer
from shared.service_layer.impact import ImpactAnalysis, graph_to_dict
from shared.service_layer.ingest import Ingest
from tests.fakes import FakeApp
from tests.unit.test_waves import DIGEST, REGISTRY, ref


def _models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in typing.get_args(annotation):
        yield from _models_in(arg)


def _items(annotation: Any, value: Any) -> list[Any]:
    """The values of `value` that are themselves answers of a model: a list's items, a map's values."""
    for arg in (annotation, *typing.get_args(annotation)):
        origin = typing.get_origin(arg)
        if origin is list:
            return list(value)
        if origin is dict:
            return list(value.values())
    return [value]


def undescribed(model: type[BaseModel], answer: dict[str, Any], at: str = "") -> list[str]:
    """The fields of `answer`, at any depth, that `model` does not describe."""
    fields = {f.alias or name: f for name, f in model.model_fields.items()}
    found = []
    for key, value in answer.items():
        if key not in fields:
            found.append(f"{at}{key}")
            continue
        inner = next(_models_in(fields[key].annotation), None)
        if inner is None or value is None:
            continue
        for item in _items(fields[key].annotation, value):
            if isinstance(item, dict):
                found += undescribed(inner, item, f"{at}{key}.")
    return found


@pytest.fixture
def answers(tmp_path) -> list[tuple[type[BaseModel], dict[str, Any]]]:
    app = FakeApp(tmp_path, REGISTRY)
    task = Task(name="app", images=["app:latest"], context="/ctx/app",
                dependencies=[Dependency(ref("base"), "sha256:" + "0" * 64, True)],
                timers=[TaskTimer(name="t1", schedule="0 21 * * *")],
                credentials=[RegistryCredential.create(REGISTRY, "user", "pass")])
    app.sources.dockerfiles[task.context] = f"FROM {ref('base')}\n"
    app.task_store.create(task)
    app.index.sync_task(task, previous=[])
    app.registry.digests[ref("base")] = DIGEST
    decision = Ingest(app.registry, app.dispatcher, app.decisions).rebuild(f"{REGISTRY}/base")
    run = app.runs.get(decision.runs[0])[0]
    wave = app.wave_store.newest()[0][0]
    members = [{"task": m.task, "run_id": m.run_id, "level": m.level, "waits_for": m.waits_for,
                "released": m.released, "outcome": m.outcome} for m in app.wave_store.members(wave.wave_id)]
    quarantined = app.quarantine.add(f"{ref('base')}@{DIGEST}", "bad base")
    impact = ImpactAnalysis(app.task_store, REGISTRY)
    return [
        (bodies.Task, {**app.task_store.get("app").public_dict(), "etag": None}),
        (bodies.Run, run.to_dict()),
        (bodies.Decision, decision.to_dict()),
        (bodies.WaveDetail, {**wave.to_dict(), "members": members}),
        (bodies.Quarantine, quarantined.to_dict()),
        (bodies.Impact, impact.impact(ref("base")).to_dict()),
        (bodies.Graph, graph_to_dict(impact.graph())),
    ]


def test_every_answer_holds_only_fields_its_model_describes(answers):
    for model, answer in answers:
        assert undescribed(model, answer) == [], model.__name__
        model.model_validate(answer)


def test_the_check_finds_an_undescribed_field_at_any_depth(answers):
    model, task = answers[0]
    task = {**task, "colour": "red", "timers": [{**task["timers"][0], "hue": 1}]}
    assert sorted(undescribed(model, task)) == ["colour", "timers.hue"]

