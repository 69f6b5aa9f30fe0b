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
from trainer.stats.error_rates import Rate, false_positive_rate, pairwise_false_positive_rate
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
