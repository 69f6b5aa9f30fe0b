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
from itertools import combinations, permutations

from scipy import stats

from trainer.decision import Trial
from trainer.experiment import Experiment
from trainer.record import Run
from trainer.verdict import Thresholds, judge_epoch, judge_seeds


@dataclass(frozen=True)
class Rate:
    hits: int
    trials: int

    @property
    def value(self) -> float:
        return self.hits / self.trials if self.trials else float("nan")

    def interval(self, confidence: float = 0.95) -> tuple[float, float]:
        """Exact (Clopper-Pearson) interval: with few runs, the honest width of what was measured."""
        if not self.trials:
            return float("nan"), float("nan")
        ci = stats.binomtest(self.hits, self.trials).proportion_ci(confidence, method="exact")
        return float(ci.low), float(ci.high)

    def words(self) -> str:
        low, high = self.interval()
        return f"{self.hits}/{self.trials} = {self.value:.0%} (95% CI {low:.0%}-{high:.0%})"


def placebo_experiments(null_runs: list[Run], seeds: int) -> list[tuple[list[Run], list[Run]]]:
    """Every way to cast `seeds` null runs as an experiment's seeds and `seeds` others as its controls."""
    cast = []
    for treated in combinations(range(len(null_runs)), seeds):
        rest = [i for i in range(len(null_runs)) if i not in treated]
        for controls in combinations(rest, seeds):
            cast.append(([null_runs[i] for i in treated], [null_runs[i] for i in controls]))
    return cast


def false_positive_rate(null_runs: list[Run], looks: list[int], thresholds: Thresholds, seeds: int) -> Rate:
    """The experiment-level rule on placebo experiments: any shifted look is a false alarm."""
    alarms = [any(judge_seeds(treated, e, thresholds, len(looks), controls).shifted for e in looks)
              for treated, controls in placebo_experiments(null_runs, seeds)]
    return Rate(sum(alarms), len(alarms))


def pairwise_false_positive_rate(null_runs: list[Run], looks: list[int], thresholds: Thresholds,
                                 counted_looks: int | None = None, floor_beyond_control: bool = True) -> Rate:
    """The per-seed rule alone (probe-level tests, no test across seeds) on every ordered pair of null
    runs, with the Bonferroni count (`counted_looks` overrides it; 1 = uncorrected) and optionally
    without the effect floor beyond the control: the ablations show what each safeguard buys."""
    alarms = trials = 0
    for treated, control in permutations(null_runs, 2):
        trials += 1
        verdicts = [judge_epoch(treated, e, thresholds, counted_looks or len(looks), control=control) for e in looks]
        alarms += any(v.shifted if floor_beyond_control else _alarm_without_floor(v, thresholds) for v in verdicts)
    return Rate(alarms, trials)


def _alarm_without_floor(v, thresholds: Thresholds) -> bool:
    return (v.p_value < v.alpha_per_look and v.gain >= thresholds.min_gain
            and v.p_vs_control is not None and v.p_vs_control < v.alpha_per_look)


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
