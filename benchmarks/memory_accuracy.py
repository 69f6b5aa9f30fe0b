"""The memory planner against measured peaks, beside `accelerate estimate-memory`, and the planner's own cost.

For every model/strategy this machine can train (CPU, random weights from the bundled configs):
  planned CPU peak (trainer.memory.planner.plan, device="cpu")
  measured peak, freed blocks returned to the OS (the planner's reference; like CUDA's max_memory_allocated)
  measured peak with glibc's default allocator (what `top` shows; fragmentation included)
  accelerate's estimate for the same model (its method, offline: AutoModel on meta, calculate_maximum_sizes,
  estimate_training_usage; its CLI needs the Hub), where it has one (fp32 or mixed-precision AdamW)
Then, per model, the time and memory of planning in a fresh process, with an empty trace cache and a warm one.

Usage: python benchmarks/memory_accuracy.py [--quick] [--out benchmarks/memory-<date>.json]
       python benchmarks/memory_accuracy.py --replan benchmarks/memory-<date>.json
         (planner changed, measurements did not: recompute the planned columns and planning cost in place)
Run it with nothing else on the machine: the measured runs take ~25 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trainer.memory.measure import measure  # noqa: E402
from trainer.memory.planner import architecture_of, plan  # noqa: E402

CASES = [  # (model, strategy, batch, seq): all fit in 24 GiB of RAM
    ("tiny-llama", "fp32-adamw", 5, 128),
    ("smollm2-135m", "fp32-adamw", 5, 128),
    ("smollm2-135m", "fp32-adamw", 1, 64),
    ("smollm2-135m", "fp32-adamw", 10, 256),
    ("smollm2-135m", "sgd", 5, 128),
    ("smollm2-135m", "adafactor", 5, 128),
    ("smollm2-135m", "grad-checkpointing", 5, 128),
    ("smollm2-135m", "lora-fp32", 5, 128),
    ("smollm2-135m", "amp-bf16", 1, 64),  # bf16 autocast is slow on this CPU: a small batch
    ("gemma3-270m", "fp32-adamw", 5, 128),
    ("gemma3-270m", "lora-fp32", 5, 128),
    ("qwen2-0.5b", "fp32-adamw", 2, 128),
    ("phi-1.5", "lora-fp32", 1, 128),
    ("phi-2", "lora-fp32", 1, 128),
]
QUICK = CASES[:3]
PLANNED_MODELS = ["smollm2-135m", "gemma3-270m", "qwen2-0.5b", "phi-1.5", "phi-2"]
ACCELERATE_PRECISION = {"fp32-adamw": "float32", "amp-bf16": "bfloat16", "amp-fp16": "float16"}


def accelerate_estimate(model: str, strategy: str) -> int | None:
    """accelerate estimate-memory's "Training using Adam" figure, computed as its CLI does, offline."""
    import torch
    from accelerate import init_empty_weights
    from accelerate.commands.estimate import estimate_training_usage
    from accelerate.utils import calculate_maximum_sizes
    from transformers import AutoModel

    precision = ACCELERATE_PRECISION.get(strategy)
    if precision is None:
        return None
    with init_empty_weights():
        empty = AutoModel.from_config(architecture_of(model), dtype=torch.float32)
    total, _ = calculate_maximum_sizes(empty)
    return int(max(estimate_training_usage(total, precision).values()))


def compare(model: str, strategy: str, batch: int, seq: int) -> dict:
    live = measure(model, strategy, batch=batch, seq=seq, release_freed=True, cached=False)
    default = measure(model, strategy, batch=batch, seq=seq, release_freed=False, cached=False)
    row = {"model": model, "strategy": strategy, "batch": batch, "seq": seq,
           "measured": live.peak_bytes, "measured_default_malloc": default.peak_bytes,
           "accelerate": accelerate_estimate(model, strategy),
           "optimizer_to_parameters": live.optimizer_to_parameters, "seconds": round(live.seconds + default.seconds)}
    if default.peak_bytes and live.peak_bytes:
        row["default_malloc_over_live"] = round(default.peak_bytes / live.peak_bytes - 1, 4)
    return with_plan(row)


def with_plan(row: dict) -> dict:
    """The planner's columns for a measured row (recomputed by --replan when the planner changes)."""
    planned = plan(row["model"], row["strategy"], batch=row["batch"], seq=row["seq"], device="cpu")
    row |= {"planned": planned.device_total, "planned_parts": planned.device_parts, "peak_event": planned.peak_event}
    for name in ("planned", "accelerate"):
        if row[name] and row["measured"]:
            row[f"{name}_error"] = round(row[name] / row["measured"] - 1, 4)
    return row


PLAN_TIMER = """
import json, resource, sys, time
started = time.perf_counter()
import torch, transformers, peft  # the libraries any user of the planner has loaded already
from trainer.memory.planner import plan
imported = time.perf_counter()
plan(sys.argv[1], "fp32-adamw")
first = time.perf_counter()
plan(sys.argv[1], "fp32-adamw")
again = time.perf_counter()
print(json.dumps({"import_s": imported - started, "plan_s": first - imported, "same_process_again_s": again - first,
                  "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def planning_cost(model: str) -> dict:
    """plan() in a fresh process: empty trace cache, then warm; wall time and the process's peak RSS."""
    with tempfile.TemporaryDirectory(prefix="ft-plan-") as cache:
        env = os.environ | {"FT_CACHE_DIR": cache}
        runs = {}
        for state in ("cold", "warm"):
            done = subprocess.run([sys.executable, "-c", PLAN_TIMER, model], capture_output=True, text=True,
                                  env=env, cwd=ROOT, check=True)
            runs[state] = json.loads(done.stdout.strip().splitlines()[-1])
        return {"model": model, **runs}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="three SmolLM2/tiny cases only")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--replan", type=Path, default=None, help="recompute the planned columns of this file")
    args = parser.parse_args()
    if args.replan:
        results = json.loads(args.replan.read_text())
        results["cases"] = [with_plan(row) for row in results["cases"]]
        results["planning"] = [planning_cost(model) for model in PLANNED_MODELS]
        args.replan.write_text(json.dumps(results, indent=2))
        print(table(results))
        return 0
    results = {"cpu_count": os.cpu_count(), "cases": [], "planning": []}
    for case in QUICK if args.quick else CASES:
        results["cases"].append(compare(*case))
        print(json.dumps(results["cases"][-1]), flush=True)
    for model in PLANNED_MODELS:
        results["planning"].append(planning_cost(model))
        print(json.dumps(results["planning"][-1]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    print(table(results))
    return 0


def table(results: dict) -> str:
    """Markdown: planned vs measured vs accelerate per case, then planning cost per model."""
    gib = 2**30
    lines = ["| model | strategy | batch x seq | planned | measured | error | glibc default | accelerate |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results["cases"]:
        accelerate = f"{r['accelerate'] / gib:.2f} ({r['accelerate_error']:+.0%})" if r.get("accelerate") else "-"
        lines.append(f"| {r['model']} | {r['strategy']} | {r['batch']} x {r['seq']} | {r['planned'] / gib:.2f} | "
                     f"{r['measured'] / gib:.2f} | {r['planned_error']:+.1%} | "
                     f"{r['measured_default_malloc'] / gib:.2f} | {accelerate} |")
    lines += ["", "| model | plan, empty trace cache | plan, traces on disk | again in-process | torch+transformers "
                  "import | peak RSS |", "|---|---|---|---|---|---|"]
    for p in results["planning"]:
        rss = max(p["cold"]["max_rss_bytes"], p["warm"]["max_rss_bytes"]) / gib
        lines.append(f"| {p['model']} | {p['cold']['plan_s']:.2f} s | {p['warm']['plan_s']:.3f} s | "
                     f"{p['warm']['same_process_again_s']:.3f} s | {p['cold']['import_s']:.2f} s | {rss:.2f} GiB |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
