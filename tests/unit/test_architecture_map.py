"""docs/architecture.md names real paths: every backticked path in it exists in the checkout."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAP = ROOT / "docs" / "architecture.md"

# A backticked word that looks like a path: has a slash, or is a top-level file with an extension.
_PATH = re.compile(r"`([\w./-]+(?:/[\w./-]*|\.(?:py|json|md|bicep|yaml|html)))`")


def named_paths(text: str) -> list[str]:
    return sorted({match.group(1) for match in _PATH.finditer(text)})


def test_the_map_names_paths():
    paths = named_paths(MAP.read_text())
    # The map is a map: it names the layers' folders and the modules of the data path.
    assert "shared/service_layer/dispatch.py" in paths
    assert len(paths) > 50


def test_every_path_the_map_names_exists():
    missing = [path for path in named_paths(MAP.read_text()) if not (ROOT / path).exists()]
    assert missing == [], f"docs/architecture.md names paths that do not exist: {missing}"


def test_a_moved_file_would_be_caught():
    assert named_paths("see `shared/nowhere.py` and `function_app.py`") == [
        "function_app.py", "shared/nowhere.py"]
