"""How often the decision rule is wrong, measured on real runs rather than assumed from alpha.

False-positive rate: placebo against placebo. Every ordered pair (A, B) of different null runs
(neutral-data seeds) is judged as if A were the treatment and B its control, over the same looks a
real question uses; any shifted look counts as a false alarm. These are the replications that
matter: probes within one run are not independent replications of training.
Power: the share of treatment seeds (each with its own null control) that shift by the epoch asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations

from scipy import stats

from trainer.decision import Trial, first_shift
from trainer.experiment import Experiment
from trainer.record import Run
from trainer.verdict import Thresholds, judge_epoch


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


def false_positive_rate(null_runs: list[Run], looks: list[int], thresholds: Thresholds,
                        counted_looks: int | None = None, floor_beyond_control: bool = True) -> Rate:
    """Placebo-vs-placebo over every ordered pair of null runs, judged at `looks` with the Bonferroni
    count (`counted_looks` overrides it; 1 = uncorrected). `floor_beyond_control=False` drops the rule's
    effect floor on the gain beyond the control: the ablations show what each safeguard buys."""
    alarms = trials = 0
    for treated, control in permutations(null_runs, 2):
        trials += 1
        verdicts = [judge_epoch(treated, e, thresholds, counted_looks or len(looks), control=control) for e in looks]
        alarms += any(v.shifted if floor_beyond_control else _alarm_without_floor(v, thresholds) for v in verdicts)
    return Rate(alarms, trials)


def _alarm_without_floor(v, thresholds: Thresholds) -> bool:
    return (v.p_value < v.alpha_per_look and v.gain >= thresholds.min_gain
            and v.p_vs_control is not None and v.p_vs_control < v.alpha_per_look)


def power(treated_runs: list[Run], looks: list[int], thresholds: Thresholds) -> Rate:
    """Share of treatment runs (their own null control attached) that shift at some look. A run may
    have stopped early at its first shift; the Bonferroni count is still every planned look."""
    hits = sum(any(judge_epoch(run, e, thresholds, len(looks)).shifted for e in looks if e in run.evaluated_epochs)
               for run in treated_runs)
    return Rate(hits, len(treated_runs))


@dataclass(frozen=True)
class ErrorRates:
    false_positive: Rate
    power: Rate
    model: str
    by_epoch: int
    ablations: dict[str, Rate]  # false-positive rate with one safeguard removed


def measure_error_rates(exp: Experiment, replicates: int, by_epoch: int, thresholds: Thresholds,
                        progress: bool = True) -> ErrorRates:
    """`replicates` seeds of `exp` (each decided early, one seed at a time) and of its null control
    (trained through `by_epoch`, since a placebo never decides early)."""
    looks = Trial(exp, replicates).looks(by_epoch)
    nulls = Trial(exp.control(), replicates, progress).runs(by_epoch)
    treated = []
    for seed_exp in Trial(exp, replicates).seed_experiments():
        decision = first_shift(Trial(seed_exp, 1, progress), by_epoch, thresholds, f"power: shift by {by_epoch}")
        treated.append(decision.runs[0])
    ablations = {"without Bonferroni over looks": false_positive_rate(nulls, looks, thresholds, counted_looks=1),
                 "without the floor on the gain beyond the control":
                     false_positive_rate(nulls, looks, thresholds, floor_beyond_control=False)}
    return ErrorRates(false_positive_rate(nulls, looks, thresholds), power(treated, looks, thresholds),
                      exp.model, by_epoch, ablations)
