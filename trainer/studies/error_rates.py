"""How often the decision rule is wrong, measured on real runs rather than assumed from alpha.

False-positive rate: placebo against placebo. From N null runs (neutral-data seeds), every way of
casting k of them as an experiment's seeds and k others as their controls is judged with the full
rule over the same looks a real question uses; any shifted look is a false alarm. Power: every
k-subset of N treatment seeds (each with its own null control) judged the same way. Seeds are the
replications that matter: probes within one run are not independent replications of training.
The per-seed rule alone (probe-level tests only) is measured beside it, as an ablation.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

from trainer.experiment import Experiment
from trainer.runs.trial import Trial
from trainer.stats.error_rates import (
    Rate,
    false_positive_rate,
    pairwise_false_positive_rate,
    resolution_false_positive_rate,
    resolution_power,
)
from trainer.stats.movement import movement
from trainer.stats.verdict import Thresholds, judge_seeds


@dataclass(frozen=True)
class ErrorRates:
    false_positive: Rate
    power: Rate
    model: str
    by_epoch: int
    ablations: dict[str, Rate]  # false-positive rates of weaker rules


def measure_error_rates(exp: Experiment, replicates: int, by_epoch: int, thresholds: Thresholds,
                        seeds: int = 3, progress: bool = True) -> ErrorRates:
    """`replicates` seeds of `exp` and of its null control; every `seeds`-subset is judged as one
    experiment. Placebos are trained through `by_epoch` (a placebo never decides early); treatments
    only until every subset has decided."""
    if replicates < 2 * seeds:
        raise ValueError(f"replicates={replicates}: a placebo experiment needs {seeds} null runs as seeds and "
                         f"{seeds} others as controls, so at least {2 * seeds} (--ft-seeds={seeds}); use "
                         f"replicates >= {2 * seeds}")
    looks = Trial(exp, replicates).looks(by_epoch)
    nulls = Trial(exp.control(), replicates, progress).runs(by_epoch)
    ablations = {
        "per-seed rule alone (no test across seeds)": pairwise_false_positive_rate(nulls, looks, thresholds),
        "per-seed rule without Bonferroni": pairwise_false_positive_rate(nulls, looks, thresholds, counted_looks=1),
        "per-seed rule without the floor beyond the control":
            pairwise_false_positive_rate(nulls, looks, thresholds, floor_beyond_control=False)}
    return ErrorRates(false_positive_rate(nulls, looks, thresholds, seeds),
                      _power(Trial(exp, replicates, progress), looks, thresholds, seeds), exp.model, by_epoch,
                      ablations)


def _power(trial: Trial, looks: list[int], thresholds: Thresholds, seeds: int) -> Rate:
    """Share of `seeds`-subsets of the treatment's replicates that shift at some look (early decided)."""
    subsets = list(combinations(range(trial.seeds), seeds))
    undecided = set(subsets)
    for epoch in looks:
        runs = trial.runs(epoch)
        undecided -= {s for s in undecided
                      if judge_seeds([runs[i] for i in s], epoch, thresholds, len(looks)).shifted}
        if not undecided:
            break
    return Rate(len(subsets) - len(undecided), len(subsets))


@dataclass(frozen=True)
class Resolution:
    """How well the rate (trainer.stats.movement) tells two models apart with `seeds` seeds each: the power a
    saturated onset lacks. Measured on each model's `replicates` seeds at the first look, each beyond its control,
    with the across-seeds test (Welch) on one pair of models: the resolution of the measure itself. The curve's
    own judgement (Spearman over every model's seeds) is another test; with two models of 3 seeds its exact p
    cannot go below 1/20, so it is not what is measured here. Splits share runs, so the exact intervals of these
    rates are narrower than independent trials would give."""

    false_positive: Rate  # one model's seeds split in two, told apart
    power: Rate  # one model's seeds against the other's, told apart
    rates: dict[str, tuple[float, ...]]  # model -> each replicate's rate
    lr: float
    look: int
    seeds: int
    alpha: float

    def lines(self) -> list[str]:
        return [f"rate at epoch {self.look} (lr {self.lr:g}), nats/token per step beyond the control, by seed:"] + [
            f"  {model}: {', '.join(f'{r:.4g}' for r in rates)}" for model, rates in self.rates.items()] + [
            f"told apart with {self.seeds} seeds each (Welch, two-sided, alpha {self.alpha:g}):",
            f"  same model, split in two (false positives): {self.false_positive.words()}",
            f"  the two models (power): {self.power.words()}"]


def measure_rate_resolution(first: Experiment, second: Experiment, replicates: int, thresholds: Thresholds,
                            seeds: int = 3, alpha: float = 0.05, progress: bool = True) -> Resolution:
    """`replicates` seeds of each experiment (and their null controls) trained to the first look only (no
    checkpoint kept there); every `seeds`-subset judged by the across-seeds test."""
    if first.lr != second.lr or first.eval_every != second.eval_every:
        raise ValueError(f"a resolution compares two models under one recipe: lr {first.lr:g} vs {second.lr:g}, "
                         f"eval_every {first.eval_every} vs {second.eval_every}; give both the same")
    if first.model == second.model:
        raise ValueError(f"a resolution compares two models, got {first.model} twice; give another as `second`")
    if seeds < 2:
        raise ValueError(f"seeds={seeds}: Welch's test needs at least 2 seeds a group (--ft-seeds >= 2)")
    if replicates < 2 * seeds:
        raise ValueError(f"replicates={replicates}: splitting one model's seeds into two groups of {seeds} "
                         f"(--ft-seeds={seeds}) needs at least {2 * seeds}; use replicates >= {2 * seeds}")
    look = first.evaluated_epochs()[1]
    rates = {}
    for exp in (first, second):
        runs = Trial(exp.with_epochs(look, resumable=False), replicates, progress).runs(look)
        rates[exp.model] = movement(runs, [look], thresholds.min_gain).rates
    first_rates, second_rates = rates.values()
    return Resolution(resolution_false_positive_rate([first_rates, second_rates], seeds, alpha),
                      resolution_power(first_rates, second_rates, seeds, alpha), rates, first.lr, look, seeds, alpha)
