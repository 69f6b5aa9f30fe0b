"""Measure the foundation's speed targets on this machine and print them as JSON.

  cold `make test` on a fresh clone with empty caches   (target < 30 min on 2 cores)
  warm re-run of `pytest behaviors/`                     (target < 20 s)
  `pytest behaviors/ -k phi2` without Phi-2 weights      (target: seconds, skips saying how to provide them)

  `make extended` after them, when asked                 (the tier beyond CI's budget; cold run cache)

Usage: python benchmarks/suite_timings.py [--skip-cold] [--extended] [--out benchmarks/results.json]
The cold run clones HEAD into a temp folder, so uncommitted changes are not measured.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(command: list[str], cwd: Path, env: dict) -> tuple[float, int, str]:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    # stdout last: pytest's summary line belongs at the end of the tail, after stderr's progress bars.
    return time.perf_counter() - started, done.returncode, (done.stderr + done.stdout)[-3000:]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-cold", action="store_true", help="measure only warm and -k phi2 runs")
    parser.add_argument("--extended", action="store_true", help="also time `make extended` in the same clone")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ft-bench-"))
    env = os.environ | {"FT_CACHE_DIR": str(work / "cache"), "HF_HOME": str(work / "no-hf")}
    env.pop("FT_MODEL_DIR", None)
    results: dict = {"cpu_count": os.cpu_count()}
    clone = work / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    pytest = [str(clone / ".venv/bin/python"), "-m", "pytest", "-p", "no:cacheprovider", "-q"]
    if not args.skip_cold:
        seconds, code, tail = timed(["make", "test"], clone, env)
        results["cold_make_test"] = {"seconds": round(seconds, 1), "exit_code": code, "tail": tail[-1500:]}
    else:
        timed(["make", "venv"], clone, env)
    # The CI tier only (what `make test` selects); the inertia tier has its own benchmark, inertia_timings.py.
    ci_tier = ["-m", "not inertia and not extended"]
    runs = {"warm_behaviors": ["behaviors", *ci_tier],
            "phi2_without_weights": ["behaviors", *ci_tier, "-k", "phi2", "-rs"]}
    for name, extra in runs.items():
        seconds, code, tail = timed(pytest + extra, clone, env)
        results[name] = {"seconds": round(seconds, 1), "exit_code": code, "tail": tail[-1500:]}
    if args.extended:
        seconds, code, tail = timed(["make", "extended"], clone, env)
        results["cold_make_extended"] = {"seconds": round(seconds, 1), "exit_code": code, "tail": tail[-1500:]}
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
