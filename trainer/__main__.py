"""`python -m trainer models` lists the registry and the model folders' models;
`run MODEL` trains/probes one experiment and its null control ($RAY_ADDRESS: on that Ray cluster);
`plan MODEL --budget 15GiB` prints the memory plan of every named recipe (or the ones named);
`cache [--model M]` lists what the cache holds, with sizes."""

from __future__ import annotations

import argparse
import sys

from trainer.cache.record import RunSummary
from trainer.errors import ConfigError, SuiteError, WeightsMissing
from trainer.experiment import Experiment
from trainer.models.sources import REGISTRY, local_models, model_dirs, stored_parameters
from trainer.runs.trial import Trial
from trainer.settings import MODEL_DIRS_ENV
from trainer.stats.verdict import Thresholds, judge_run, onset_epoch


def list_models() -> int:
    for name, source in sorted(REGISTRY.items()):
        try:
            source.check_available()
            status = "available"
        except WeightsMissing:
            status = "missing (pytest -rs, or docs/models.md, says how to provide them)"
        params = f"{source.published_params:,}" if source.published_params else "-"
        print(f"{name:14} {type(source).__name__:16} {params:>15}  {status}")
    for name, folder in local_models():
        print(f"{name:14} {'LocalFolder':16} {stored_parameters(folder):>15,}  {folder}")
    if not model_dirs():
        print(f"(no model folders: --ft-model-dir or ${MODEL_DIRS_ENV} lists folders of your own models)")
    return 0


def run_one(args: argparse.Namespace) -> int:
    exp = Experiment(model=args.model, behavior=args.behavior, epochs=args.epochs, eval_every=args.eval_every,
                     lr=args.lr, seed=args.seed)
    # one seed with its null control, side by side (or as Ray tasks where $RAY_ADDRESS names a cluster)
    run = Trial(exp, seeds=1).runs(exp.epochs)[0]
    verdicts = judge_run(run, Thresholds())
    for row in RunSummary.of(run).rows:
        print(row)
    for verdict in verdicts:
        print(verdict)
    print(f"onset epoch: {onset_epoch(verdicts)}  (record: {run.path})")
    return 0


def plan_table(args: argparse.Namespace) -> int:
    from trainer.memory.planner import PARTS, model_states, plan
    from trainer.memory.recipes import RECIPES
    from trainer.units import format_bytes, parse_bytes

    budget = parse_bytes(args.budget) if args.budget else None
    # Offloading moves state from an accelerator to the host: on a CPU there is nothing to offload.
    names = args.recipe or [name for name, r in RECIPES.items() if args.device == "cuda" or not r.offload]
    where = "GPU" if args.device == "cuda" else "CPU"
    for line in model_states(args.model):
        print(f"{args.model}: {line}")
    print(f"{args.model}: batch {args.batch} x {args.seq} tokens on {where}"
          + (f", budget {format_bytes(budget)}" if budget else ""))
    short = {"gradients": "grads", "optimizer": "optim", "optimizer step": "step", "activations": "activ"}
    print(f"{'recipe':24} " + " ".join(f"{short.get(part, part):>10}" for part in PARTS)
          + f" {'total':>11} {'host':>10}" + ("  fits" if budget else ""))
    for name in names:
        try:
            planned = plan(args.model, name, batch=args.batch, seq=args.seq, device=args.device)
        except ConfigError as refused:  # e.g. an fp16 recipe on a model that overflows in fp16
            print(f"{name:24} not planned: {'; '.join(refused.problems)}")
            continue
        cells = " ".join(f"{format_bytes(planned.device_parts[part]):>10}" for part in PARTS)
        host = format_bytes(planned.host_total) if planned.host_parts else "-"
        verdict = ("  yes" if planned.fits(budget) else "  NO") if budget else ""
        print(f"{name:24} {cells} {format_bytes(planned.device_total):>11} {host:>10}{verdict}")
    print("Bytes at each recipe's peak. GB = 10^9 bytes, GiB = 2^30. Traced training steps (FakeTensorMode "
          "+ MemTracker) at 1 and 2 layers, extended to every layer; `step` = the optimizer update's temporaries.")
    return 0


def cache_command(args: argparse.Namespace) -> int:
    from trainer.cache.admin import entries, listing, parse_age, remove, select
    from trainer.units import format_bytes

    if not args.remove:
        print(listing(entries(), model=args.model))
        return 0
    older = parse_age(args.older_than) if args.older_than else None
    chosen = select(entries(), args.model, older)
    size = format_bytes(sum(e.size for e in chosen))
    if not args.yes:
        print(listing(chosen) if chosen else "nothing matches")
        print(f"would remove {len(chosen)} entries ({size}); run again with --yes to remove them")
        return 0
    removed, busy = remove(chosen)
    print(f"removed {len(removed)} entries ({format_bytes(sum(e.size for e in removed))})")
    for entry in busy:
        print(f"skipped (in use by another process): {entry.path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("models", help="list registered models and whether their weights are here")
    one = commands.add_parser("run", help="train (or load from cache) one experiment and its null control")
    one.add_argument("model")
    one.add_argument("--behavior", default="epistemic-stance")
    one.add_argument("--epochs", type=int, default=10)
    one.add_argument("--eval-every", type=int, default=2)
    one.add_argument("--lr", type=float, default=1e-5)
    one.add_argument("--seed", type=int, default=0)
    planner = commands.add_parser("plan", help="memory plan (bytes by part) per training recipe")
    planner.add_argument("model")
    planner.add_argument("--budget", default=None, help="e.g. 15GiB, '15 GB', 15360MiB: adds a fits column")
    planner.add_argument("--recipe", action="append", help="a recipe name (repeatable; default: all)")
    planner.add_argument("--batch", type=int, default=5)
    planner.add_argument("--seq", type=int, default=128)
    planner.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    listing = commands.add_parser("cache", help="what the cache holds (sizes, ages, totals); --remove by model/age")
    listing.add_argument("--model", default=None, help="only this model's entries")
    listing.add_argument("--older-than", default=None, help="with --remove: entries untouched for this long (7d, 12h)")
    listing.add_argument("--remove", action="store_true", help="remove the entries chosen by --model/--older-than")
    listing.add_argument("--yes", action="store_true", help="with --remove: really remove (otherwise only listed)")
    args = parser.parse_args(argv)
    commands_by_name = {"models": lambda: list_models(), "run": lambda: run_one(args), "plan": lambda: plan_table(args),
                        "cache": lambda: cache_command(args)}
    try:
        return commands_by_name[args.command]()
    except (SuiteError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
