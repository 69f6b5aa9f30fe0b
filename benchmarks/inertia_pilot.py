"""Pilot for issue 19: onsets and the continuous movement (trainer.stats.movement) of the inertia models at
learning rates below the notebook's, to choose the rates at which sizes can be told apart.

Usage: python benchmarks/inertia_pilot.py --lr 1e-6 [--lr 3e-7] [--by-epoch 6] [--out <json>]
Runs in the current cache (early decision: each model trains to its onset or `--by-epoch`); prints each model's
onset, rate (nats/token per step beyond the controls, 95% t-interval over seeds) and steps to the floor.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

MODELS = ["smollm2-135m-15l", "smollm2-135m-22l", "smollm2-135m", "gemma3-270m"]


def main() -> int:
    from trainer import Experiment
    from trainer.stats.verdict import Thresholds
    from trainer.studies.inertia import measure_curve

    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, action="append", required=True)
    parser.add_argument("--by-epoch", type=int, default=6)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    results = []
    for lr in args.lr:
        started = time.perf_counter()
        template = Experiment(model=MODELS[0], epochs=args.by_epoch, eval_every=1, lr=lr, generate=False)
        curve = measure_curve(template, MODELS, args.by_epoch, args.seeds, Thresholds())
        print(f"lr {lr:g} ({time.perf_counter() - started:.0f} s):\n{curve.lines()}", flush=True)
        for point in curve.points:
            moved = point.movement
            results.append({"lr": lr, "model": point.model, "parameters": point.parameters, "onset": point.onset,
                            "rates": list(moved.rates), "rate": asdict(moved.rate),
                            "crossings": list(moved.crossings),
                            "crossing": asdict(moved.crossing) if moved.crossing else None})
    if args.out:
        args.out.write_text(json.dumps({"by_epoch": args.by_epoch, "seeds": args.seeds, "points": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
