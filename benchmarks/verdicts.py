"""The behavior suite's verdicts as two plain lists, to compare before and after a change that must keep them.

    python benchmarks/verdicts.py JUNIT_XML CACHE_DIR > verdicts.txt

Outcomes: every behavior test id with passed / xfailed / skipped / failed, from pytest's --junitxml file.
Onsets: every early decision noted in the cache (`decisions.json` beside each run record; records of the
older untyped schema kept them inside), one line per experiment and question, read from seed 0's run.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def outcomes(junit: Path) -> list[str]:
    lines = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        module = case.get("classname", "")
        if not module.startswith("behaviors"):
            continue
        outcome = "passed"
        for child in case:
            if child.tag == "skipped":
                outcome = "xfailed" if child.get("type") == "pytest.xfail" else "skipped"
            elif child.tag in ("failure", "error"):
                outcome = "failed" if child.tag == "failure" else "error"
        lines.append(f"{module.replace('.', '/')}.py::{case.get('name')} {outcome}")
    return sorted(lines)


def onsets(cache: Path) -> list[str]:
    lines = set()
    for record_path in cache.glob("runs/*/record.json"):
        body = json.loads(record_path.read_text())["body"]
        experiment = body["experiment"]
        if experiment["seed"] != 0:
            continue
        notes = body.get("decisions")
        beside = record_path.with_name("decisions.json")
        if notes is None and beside.exists():
            notes = json.loads(beside.read_text())["body"]["decisions"]
        method = experiment["method"]
        what = (f"{experiment['model']} {method['kind']}"
                + "".join(f" {k}={v}" for k, v in sorted(method.items()) if k != "kind")
                + f" lr={experiment['lr']:g} {experiment['precision']} {experiment['data']} data")
        for note in notes or []:
            lines.add(f"{what} | {note['question']} | onset {note['onset']} | trained through "
                      f"{note['trained_through']}")
    return sorted(lines)


if __name__ == "__main__":
    junit, cache = Path(sys.argv[1]), Path(sys.argv[2])
    print("# outcomes"), print("\n".join(outcomes(junit)))
    print("# onsets"), print("\n".join(onsets(cache)))
