"""Import the app and turn `FunctionApp.get_functions()` into the table of functions devhost serves.

Mirrors the Python worker's loader: import the script module (`function_app` by default), expect
exactly one `FunctionRegister` (`FunctionApp`, `AsgiFunctionApp`, ...) among its globals and call
`get_functions()` on it once — a second call fails with duplicate-name errors, and keeping the
app as the only registry of functions means devhost cannot drift from what Azure would index.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import azure.functions as func
from azure.functions.decorators.function_app import FunctionRegister

HTTP_TRIGGER = "httpTrigger"
QUEUE_TRIGGER = "queueTrigger"
EVENT_GRID_TRIGGER = "eventGridTrigger"
TIMER_TRIGGER = "timerTrigger"
SUPPORTED_TRIGGERS = (HTTP_TRIGGER, QUEUE_TRIGGER, EVENT_GRID_TRIGGER, TIMER_TRIGGER)


class LoadError(RuntimeError):
    """The app cannot be loaded at all (import failure, no or several FunctionApps)."""


@dataclass(frozen=True)
class FunctionEntry:
    """One function as the app declared it: its trigger binding and the Python callable."""

    name: str
    trigger: Mapping[str, Any]  # the trigger binding's get_dict_repr()
    user_function: Callable[..., Any]
    context_param: str | None

    @property
    def trigger_type(self) -> str:
        return str(self.trigger["type"])

    @property
    def param(self) -> str:
        return str(self.trigger["name"])

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.user_function)


@dataclass(frozen=True)
class FunctionTable:
    entries: tuple[FunctionEntry, ...]
    errors: Mapping[str, str]  # function name -> why it is not served

    def of_type(self, trigger_type: str) -> list[FunctionEntry]:
        return [e for e in self.entries if e.trigger_type == trigger_type]

    def get(self, name: str) -> FunctionEntry | None:
        return next((e for e in self.entries if e.name == name), None)


def import_app(module_name: str, root: Path) -> FunctionRegister:
    # The worker runs with the app root on sys.path, which is how `functions.*` and `shared.*` import.
    sys.path.insert(0, str(root))
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise LoadError(f"cannot import {module_name!r} from {root}: {exc!r}") from exc
    apps = [value for value in vars(module).values() if isinstance(value, FunctionRegister)]
    if len(apps) != 1:
        raise LoadError(f"{module_name!r} must define exactly one FunctionApp; found {len(apps)}")
    return apps[0]


def _context_param(user_function: Callable[..., Any]) -> str | None:
    for param in inspect.signature(user_function).parameters.values():
        if param.name == "context" or param.annotation in (func.Context, "func.Context"):
            return param.name
    return None


def _entry(function: Any) -> FunctionEntry:
    """Build one entry, or raise ValueError saying why devhost cannot serve the function."""
    bindings = [b.get_dict_repr() for b in function.get_bindings()]
    triggers = [b for b in bindings if str(b.get("type", "")).endswith("Trigger")]
    if len(triggers) != 1:
        raise ValueError(f"expected one trigger binding, found {len(triggers)}")
    trigger = triggers[0]
    if trigger["type"] not in SUPPORTED_TRIGGERS:
        raise ValueError(f"trigger type {trigger['type']!r} is not supported by devhost")
    # Only the HTTP response binding comes along; any other binding would need its own extension.
    others = [
        b for b in bindings if b is not trigger and not (b.get("type") == "http" and b["name"] == "$return")
    ]
    if others:
        names = ", ".join(f"{b.get('type')} {b.get('name')!r}" for b in others)
        raise ValueError(f"bindings other than the trigger are not supported by devhost: {names}")

    user_function = function.get_user_function()
    context_param = _context_param(user_function)
    declared = {trigger["name"], context_param}
    unbound = [
        p.name
        for p in inspect.signature(user_function).parameters.values()
        if p.name not in declared and p.default is inspect.Parameter.empty
    ]
    if unbound:
        raise ValueError(f"parameters {unbound} have no binding")
    return FunctionEntry(
        name=function.get_function_name(),
        trigger=trigger,
        user_function=user_function,
        context_param=context_param,
    )


def load_functions(app: FunctionRegister) -> FunctionTable:
    entries: list[FunctionEntry] = []
    errors: dict[str, str] = {}
    for function in app.get_functions():
        try:
            entries.append(_entry(function))
        except ValueError as exc:
            # The SDK types the name Optional: it is set by the time the app lists its functions.
            errors[function.get_function_name() or "<unnamed>"] = str(exc)
    return FunctionTable(entries=tuple(entries), errors=errors)
