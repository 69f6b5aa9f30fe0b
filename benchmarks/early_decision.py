"""How much early decision saves: one onset question answered cold, with and without stopping early.

Each variant runs in its own empty cache (model conversion excluded: it is shared through a
pre-warmed models/ folder), so both pay for every epoch they train and every look they probe.
  early: trainer.studies.early_decision.first_shift (train each seed to the next look only while undecided)
  full:  train every seed and control to by_epoch, then judge every look (what the suite did before)
Both must reach the same onset; the ratio of their wall times is the saving.

Usage: python benchmarks/early_decision.py [--model smollm2-135m-15l] [--by-epoch 6] [--seeds 3]
       python benchmarks/early_decision.py --from-cache   # the whole inertia tier, from its records:
           seconds actually spent training and probing vs what training every run to epoch 6 would
           have cost at the same measured per-epoch and per-look times
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m-15l")
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--by-epoch", type=int, default=6)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--from-cache", action="store_true", help="estimate the inertia tier's saving from its records")
    args = parser.parse_args()
    if args.from_cache:
        print(json.dumps(_from_cache(args.by_epoch), indent=2))
        return 0
    from trainer import settings

    shared_models = settings.active().cache_root()
    results = {"model": args.model, "lr": args.lr, "by_epoch": args.by_epoch, "seeds": args.seeds}
    for variant in ("early", "full"):
        results[variant] = _measure(variant, args, shared_models)
    results["saving_factor"] = round(results["full"]["seconds"] / results["early"]["seconds"], 2)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if results["early"]["onset"] == results["full"]["onset"] else 1


def _from_cache(by_epoch: int) -> dict:
    """Inertia-tier runs (eval every epoch, margins only): spent vs full-length cost, per measured parts."""
    from trainer.cache import store

    spent = full = 0.0
    runs = 0
    for record in store.cache_root().glob("runs/*/record.json"):
        body = store.read_record(record)
        exp = body["experiment"]
        if exp["eval_every"] != 1 or exp["generate"]:
            continue
        epoch_seconds = [e["seconds"] for e in body["train_log"]]
        probe_seconds = [e["probe_seconds"] for e in body["evaluations"][1:]]
        per_epoch = sum(epoch_seconds) / len(epoch_seconds) + sum(probe_seconds) / len(probe_seconds)
        spent += per_epoch * body["epochs_done"]
        full += per_epoch * max(by_epoch, body["epochs_done"])
        runs += 1
    return {"runs": runs, "trained_and_probed_seconds": round(spent), "if_trained_to_epoch": by_epoch,
            "full_length_seconds": round(full), "saving_factor": round(full / spent, 2) if spent else None}


def _measure(variant: str, args, shared_models: Path) -> dict:
    cache = Path(tempfile.mkdtemp(prefix=f"ft-early-{variant}-"))
    for folder in ("models", "fingerprints", "gguf"):  # reuse converted weights; runs and baselines start empty
        if (shared_models / folder).is_dir():
            (cache / folder).symlink_to(shared_models / folder)
    from trainer import settings

    settings.use(settings.Settings(cache_dir=str(cache)))
    from trainer.experiment import Experiment
    from trainer.runs.trial import Trial
    from trainer.stats.verdict import Thresholds, judge_seeds
    from trainer.studies.early_decision import first_shift

    exp = Experiment(model=args.model, lr=args.lr, epochs=args.by_epoch, eval_every=1, generate=False)
    trial = Trial(exp, args.seeds, progress=False)
    started = time.perf_counter()
    if variant == "early":
        decision = first_shift(trial, args.by_epoch, Thresholds(), "benchmark")
        onset, trained = decision.onset, decision.trained_through
    else:
        runs = trial.runs(args.by_epoch)
        looks = trial.looks(args.by_epoch)
        onset = next((e for e in looks if judge_seeds(runs, e, Thresholds(), len(looks)).shifted), None)
        trained = args.by_epoch
    seconds = time.perf_counter() - started
    shutil.rmtree(cache, ignore_errors=True)
    return {"seconds": round(seconds, 1), "onset": onset, "trained_through": trained}


if __name__ == "__main__":
    raise SystemExit(main())
