"""Per-step time and peak memory of LoRA vs full fine-tuning (issue 4's targets: LoRA >= 1.5x faster
per step on SmolLM2; peak memory of a LoRA run next to full fine-tuning).

Each configuration runs in its own fresh process (spawn), so its peak resident memory (ru_maxrss)
is its own: model load + method + AdamW + `--steps` timed steps on the behavior's 5 examples in one
batch, after 2 warm-up steps. The process that only loads the model is measured too, to separate
the model's own footprint from what training adds.

Usage: python benchmarks/method_costs.py [--model smollm2-135m] [--steps 8] [--out benchmarks/methods-<date>.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONFIGS = {
    "load only": None,
    "full fine-tuning (fp32 AdamW)": {},
    "LoRA r=32 q_proj,v_proj (the notebook's)": {"method": ("lora", {"rank": 32, "alpha": 64,
                                                                 "targets": ("q_proj", "v_proj")})},
    "LoRA r=32 all-linear": {"method": ("lora", {"rank": 32, "alpha": 64, "targets": "all-linear"})},
    "LoRA r=8 all-linear": {"method": ("lora", {"rank": 8, "alpha": 16, "targets": "all-linear"})},
    "unfreeze 2 layers (54%, 63%)": {"method": ("unfreeze", {"layers": (0.54, 0.63)})},
}


def measure(model_name: str, config: dict | None, steps: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    from trainer.experiment import Experiment, LoRA, Unfreeze
    from trainer.models.sources import resolve_model
    from trainer.studies.step_costs import training_step

    if config is None:  # loading the model alone
        loaded = resolve_model(model_name).load()
        result: dict = {"parameters": sum(p.numel() for p in loaded.model.parameters())}
    else:
        kind, fields = config.get("method", ("full", {}))
        method = {"lora": LoRA, "unfreeze": Unfreeze}[kind](**fields) if kind != "full" else None
        model, step = training_step(Experiment(model=model_name, device="cpu", processes=1,
                                               **({"method": method} if method else {})))
        seconds = []
        for index in range(steps + 2):
            started = time.perf_counter()
            step()
            if index >= 2:
                seconds.append(time.perf_counter() - started)
        result = {"parameters": sum(p.numel() for name, p in model.named_parameters() if "lora_" not in name),
                  "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
                  "step_seconds_median": statistics.median(seconds), "step_seconds": seconds}
    result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    threads = len(os.sched_getaffinity(0))
    results = {"model": args.model, "cpu_count": threads, "steps_timed": args.steps, "configs": {}}
    context = multiprocessing.get_context("spawn")
    for name, config in CONFIGS.items():
        with context.Pool(1) as pool:
            results["configs"][name] = pool.apply(measure, (args.model, config, args.steps, threads))
        print(f"{name}: {json.dumps({k: v for k, v in results['configs'][name].items() if k != 'step_seconds'})}",
              flush=True)
    full = results["configs"]["full fine-tuning (fp32 AdamW)"]["step_seconds_median"]
    results["speedup_vs_full"] = {name: round(full / r["step_seconds_median"], 2)
                                  for name, r in results["configs"].items() if "step_seconds_median" in r}
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
