"""docs/contract.md lists every module function_app.py registers, with each of its function names,
and every table and blob container of shared/adapters/storage.py: a new blueprint or table that the
contract does not name fails here, not in a reader's head."""

from __future__ import annotations

import ast
from pathlib import Path

from shared.adapters.storage import CONTAINERS, TABLES

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT / "docs" / "contract.md"


def registered_modules(source: str) -> list[str]:
    """The modules whose blueprint function_app.py registers: `app.register_functions(<module>.bp)`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "register_functions" and node.args
                and isinstance(node.args[0], ast.Attribute) and isinstance(node.args[0].value, ast.Name)):
            found.append(node.args[0].value.id)
    return found


def function_names(source: str) -> list[str]:
    """The names given by `@bp.function_name("...")` in a module of functions/."""
    return [node.args[0].value for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "function_name" and node.args
            and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)]


def test_function_app_registers_modules():
    modules = registered_modules((ROOT / "function_app.py").read_text())
    assert "build_worker" in modules and len(modules) >= 18


def test_every_registered_module_and_its_functions_are_in_the_contract():
    contract = CONTRACT.read_text()
    missing = []
    for module in registered_modules((ROOT / "function_app.py").read_text()):
        path = f"functions/{module}.py"
        if f"`{path}`" not in contract:
            missing.append(path)
        missing += [f"{path}: {name}" for name in function_names((ROOT / path).read_text())
                    if f"`{name}`" not in contract]
    assert missing == [], f"docs/contract.md does not name: {missing}"


def test_every_table_and_container_is_in_the_contract():
    contract = CONTRACT.read_text()
    missing = [f"{{prefix}}{name}" for name in TABLES if f"`{{prefix}}{name}`" not in contract]
    missing += [f"{{prefix}}-{name}" for name in CONTAINERS if f"`{{prefix}}-{name}`" not in contract]
    assert missing == [], f"docs/contract.md does not name: {missing}"


def test_a_module_left_out_would_be_caught():
    source = "app.register_functions(api.bp)\napp.register_functions(new_thing.bp)\n"
    assert registered_modules(source) == ["api", "new_thing"]
    assert function_names('@bp.function_name("x")\ndef x(): ...\n') == ["x"]
