"""Measure the inertia tier's targets: cold (< 45 min on 2 cores) and warm (< 30 s), and what early
decision saved, on a clone of HEAD with an empty cache (model conversion included).

Usage: python benchmarks/inertia_timings.py [--commit REV] [--junit PATH] [--out benchmarks/inertia-<date>.json]
(`--commit`: measure that commit instead of HEAD, for a before/after pair; `--junit`: the cold run's JUnit XML,
for `benchmarks/verdicts.py`.)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from suite_timings import ROOT, timed  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--commit", default="HEAD", help="the commit to measure (default: HEAD)")
    parser.add_argument("--junit", type=Path, default=None, help="write the cold run's JUnit XML here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ft-inertia-"))
    env = os.environ | {"FT_CACHE_DIR": str(work / "cache"), "HF_HOME": str(work / "no-hf")}
    env.pop("FT_MODEL_DIR", None)
    clone = work / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    subprocess.run(["git", "checkout", "-q", args.commit], cwd=clone, check=True)
    timed(["make", "venv"], clone, env)  # set-up is measured by suite_timings.py, not here
    results: dict = {"cpu_count": os.cpu_count(), "commit": _head(clone)}
    for name in ("cold_make_inertia", "warm_make_inertia"):
        junit = f" --junitxml={args.junit.resolve()}" if args.junit and name.startswith("cold") else ""
        seconds, code, tail = timed(["make", "inertia", f"PYTEST_ARGS=-p no:cacheprovider -q --ft-no-progress{junit}"],
                                    clone, env)
        results[name] = {"seconds": round(seconds, 1), "exit_code": code, "tail": tail[-1500:]}
    saving = subprocess.run([str(clone / ".venv/bin/python"), "benchmarks/early_decision.py", "--from-cache"],
                            cwd=clone, env=env, capture_output=True, text=True)
    results["early_decision_from_records"] = json.loads(saving.stdout) if saving.returncode == 0 else saving.stderr
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


def _head(clone: Path) -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True,
                          text=True).stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
