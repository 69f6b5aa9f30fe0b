"""Measure the inertia tier's targets: cold (< 45 min on 2 cores) and warm (< 30 s), and what early
decision saved, on a clone of HEAD with an empty cache (model conversion included).

Usage: python benchmarks/inertia_timings.py [--out benchmarks/inertia-<date>.json]
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
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ft-inertia-"))
    env = os.environ | {"FT_CACHE_DIR": str(work / "cache"), "HF_HOME": str(work / "no-hf")}
    env.pop("FT_MODEL_DIR", None)
    clone = work / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    timed(["make", "venv"], clone, env)  # set-up is measured by suite_timings.py, not here
    results: dict = {"cpu_count": os.cpu_count(), "commit": _head(clone)}
    for name in ("cold_make_inertia", "warm_make_inertia"):
        seconds, code, tail = timed(["make", "inertia", "PYTEST_ARGS=-p no:cacheprovider -q --ft-no-progress"],
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
