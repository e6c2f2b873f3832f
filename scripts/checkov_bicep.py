#!/usr/bin/env python3
"""Checkov's Bicep policies on infra/, each finding fixed or explained in docs/deploy.md (`make checkov`).

Checkov is installed in a virtual environment of its own (STACK_DIR/checkov, default .stack/checkov):
it pins about a hundred packages, which must not meet the app's, and takes some 300 MB and a minute
or two to install, which is why this is a make target of its own rather than part of `make test`
(CI parses every .bicep file with pycep-parser instead: tests/unit/test_bicep_parse.py).
Checkov runs with its own pinned parser (pycep-parser 0.5.1), which cannot read Bicep lambdas
(`=>`): the templates use none (tests/unit/test_infra.py checks it), and a file Checkov reports as a
parsing error fails this script.

The run is offline (--skip-download). Its failed checks are compared with the table under
"### Checkov findings" in docs/deploy.md, one row per (check, resource, file): a finding the table
does not explain fails, and so does a row for a finding Checkov no longer reports, so the document
stays true. A file Checkov cannot parse fails too.

    python3 scripts/checkov_bicep.py            # install if needed, run, compare
    python3 scripts/checkov_bicep.py --report   # also print every finding with its explanation
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CHECKOV = "checkov==3.3.30"
DOC = ROOT / "docs" / "deploy.md"
SECTION = "### Checkov findings"
ROW = re.compile(r"^\|\s*`(CKV2?_[A-Z]+_\d+)`\s*\|\s*`([^`]+)`\s*\|\s*`([^`]+)`\s*\|(.+)\|\s*$")


def environment() -> Path:
    """The Checkov virtual environment, installed or brought up to the pinned versions."""
    home = Path(os.environ.get("STACK_DIR") or ROOT / ".stack") / "checkov"
    python = home / "bin" / "python"
    stamp = home / "installed.txt"
    wanted = hashlib.sha256(f"{CHECKOV} {sys.version}".encode()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return home
    print(f"checkov: installing {CHECKOV} into {home} (once; about 300 MB)…", file=sys.stderr)
    venv.EnvBuilder(with_pip=True, clear=True).create(home)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, CHECKOV], check=True)
    stamp.write_text(wanted)
    return home


def findings(home: Path) -> tuple[set[tuple[str, str, str]], dict[str, Any]]:
    """Checkov's failed checks as (check id, resource, file relative to infra/), and its summary."""
    env = dict(os.environ, BC_SKIP_MAPPING="TRUE", CHECKOV_LOG_LEVEL="ERROR")
    done = subprocess.run(
        [str(home / "bin" / "checkov"), "-d", str(ROOT / "infra"), "--framework", "bicep",
         "--skip-download", "--quiet", "-o", "json"],
        capture_output=True, text=True, env=env, timeout=900,
    )
    if not done.stdout.strip().startswith(("{", "[")):
        sys.exit(f"checkov: no JSON report (exit {done.returncode}):\n{done.stderr[-2000:]}")
    reports = json.loads(done.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed: set[tuple[str, str, str]] = set()
    summary: dict[str, Any] = {}
    for report in reports:
        if report.get("check_type") != "bicep":
            continue
        summary = report["summary"]
        for check in report["results"]["failed_checks"]:
            failed.add((check["check_id"], check["resource"], check["file_path"].lstrip("/")))
    return failed, summary


def explained() -> dict[tuple[str, str, str], str]:
    """The rows of the findings table in docs/deploy.md."""
    text = DOC.read_text()
    if SECTION not in text:
        sys.exit(f"checkov: {DOC.relative_to(ROOT)} has no '{SECTION}' section")
    rows: dict[tuple[str, str, str], str] = {}
    for line in text.split(SECTION, 1)[1].split("\n#", 1)[0].splitlines():
        match = ROW.match(line)
        if match:
            check, resource, file, why = match.groups()
            rows[(check, resource, file)] = why.strip()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", action="store_true", help="print every finding with its explanation")
    args = parser.parse_args()

    failed, summary = findings(environment())
    rows = explained()
    print(f"checkov: {summary.get('passed')} passed, {summary.get('failed')} failed, "
          f"{summary.get('parsing_errors')} parsing errors, {summary.get('resource_count')} resources "
          f"(checkov {summary.get('checkov_version')})")
    problems = []
    if summary.get("parsing_errors"):
        problems.append(f"{summary['parsing_errors']} file(s) could not be parsed: "
                        "their resources went unchecked")
    for finding in sorted(failed - set(rows)):
        problems.append("not explained in docs/deploy.md: | `{}` | `{}` | `{}` | … |".format(*finding))
    for finding in sorted(set(rows) - failed):
        problems.append("explained but no longer reported (remove the row): {} {} {}".format(*finding))
    if args.report:
        for finding in sorted(failed & set(rows)):
            print("  {} {} ({}): {}".format(*finding, rows[finding]))
    for problem in problems:
        print(f"checkov: {problem}", file=sys.stderr)
    if not problems:
        print(f"checkov: every finding ({len(failed)}) is explained in docs/deploy.md")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
