"""`python -m trainer models` lists the registry; `python -m trainer run MODEL ...` trains/probes one experiment."""

from __future__ import annotations

import argparse
import sys

from trainer.errors import SuiteError, WeightsMissing
from trainer.experiment import Experiment
from trainer.models import REGISTRY
from trainer.record import RunSummary
from trainer.runner import obtain_with_control
from trainer.verdict import Thresholds, judge_run, onset_epoch


def list_models() -> int:
    for name, source in sorted(REGISTRY.items()):
        try:
            source.check_available()
            status = "available"
        except WeightsMissing:
            status = "missing (pytest -rs, or README 'Adding weights', says how to provide them)"
        params = f"{source.published_params:,}" if source.published_params else "-"
        print(f"{name:14} {type(source).__name__:16} {params:>15}  {status}")
    return 0


def run_one(args: argparse.Namespace) -> int:
    exp = Experiment(model=args.model, behavior=args.behavior, epochs=args.epochs, eval_every=args.eval_every,
                     lr=args.lr, seed=args.seed)
    run = obtain_with_control(exp)
    verdicts = judge_run(run, Thresholds())
    for row in RunSummary.of(run).rows:
        print(row)
    for verdict in verdicts:
        print(verdict)
    print(f"onset epoch: {onset_epoch(verdicts)}  (record: {run.path})")
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
    args = parser.parse_args(argv)
    try:
        return list_models() if args.command == "models" else run_one(args)
    except (SuiteError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
