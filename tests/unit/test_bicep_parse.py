"""Every .bicep file of infra/ parses with pycep-parser, the Bicep parser Checkov uses.

No Bicep compiler can be installed on these machines (`bicep build` is the real check; see
docs/deploy.md). This is the syntax check that stands in for it in CI: a syntax error in any file
fails here. The parse tree is also compared with what tests/unit/test_infra.py's text scanner reads,
so the two readings of the templates agree, and every module path leads to a file that exists.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from lark.exceptions import UnexpectedInput
from pycep import BicepParser

from tests.unit.test_infra import INFRA, Bicep, all_bicep_files

PARSER = BicepParser()


@pytest.mark.parametrize("path", all_bicep_files(), ids=lambda p: str(p.relative_to(INFRA)))
def test_every_bicep_file_parses_and_reads_as_the_scanner_reads_it(path: Path):
    tree = PARSER.parse(file_path=path)  # raises on any syntax error

    scanned = Bicep(path)
    assert set(tree.get("parameters") or {}) == set(scanned.params)
    assert set(tree.get("variables") or {}) == set(scanned.vars)
    assert set(tree.get("outputs") or {}) == set(scanned.outputs)
    resources = {symbol: (r["type"], r["existing"]) for symbol, r in (tree.get("resources") or {}).items()}
    assert {symbol: kind for symbol, (kind, _) in resources.items()} == {
        symbol: kind for symbol, (kind, _) in scanned.resources.items()
    }
    modules = tree.get("modules") or {}
    assert set(modules) == set(scanned.modules)
    for symbol, module in modules.items():
        assert module["type"] == "local", f"{path.name}: module {symbol} is not a local file"
        target = path.parent / module["detail"]["path"]
        assert target.is_file(), f"{path.name}: module {symbol} points at {target}, which does not exist"


def test_the_parse_catches_a_syntax_error():
    """The check above can fail: a template with an unclosed object does not parse."""
    text = (INFRA / "app" / "keyvault.bicep").read_text()
    broken = text.replace("  properties: {\n    tenantId", "  properties: \n    tenantId", 1)
    assert broken != text
    with pytest.raises(UnexpectedInput):
        PARSER.parse(text=broken)
