"""Error-rate arithmetic of the decision rule over cached null and treatment runs (pure functions of records)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations, permutations

import numpy as np
from scipy import stats

from trainer.cache.record import Run
from trainer.judgement import Judgement, judged
from trainer.stats.verdict import Thresholds, judge_epoch, judge_seeds


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

    def judge_at_most(self, limit: float, what: str) -> Judgement:
        """The measured rate is at most `limit` (its point value; the interval is shown beside it)."""
        holds = self.value <= limit
        return judged(holds, f"{what}: {self.words()} {'is within' if holds else 'exceeds'} {limit:.0%}")

    def judge_at_least(self, limit: float, what: str) -> Judgement:
        holds = self.value >= limit
        return judged(holds, f"{what}: {self.words()} {'reaches' if holds else 'is below'} {limit:.0%}")


def disjoint_groups(count: int, size: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Every ordered pair of disjoint `size`-subsets of range(count), as indices."""
    pairs = []
    for first in combinations(range(count), size):
        rest = [i for i in range(count) if i not in first]
        pairs += [(first, second) for second in combinations(rest, size)]
    return pairs


def placebo_experiments(null_runs: list[Run], seeds: int) -> list[tuple[list[Run], list[Run]]]:
    """Every way to cast `seeds` null runs as an experiment's seeds and `seeds` others as its controls."""
    return [([null_runs[i] for i in treated], [null_runs[i] for i in controls])
            for treated, controls in disjoint_groups(len(null_runs), seeds)]


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


def tells_apart(first: Sequence[float], second: Sequence[float], alpha: float) -> bool:
    """The across-seeds test (Welch's t, two-sided) finds the two groups' means different at `alpha`. Groups with
    no spread at all are told apart exactly when their means differ."""
    first, second = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    if np.ptp(first) == 0 and np.ptp(second) == 0:
        return bool(first.mean() != second.mean())
    return bool(stats.ttest_ind(first, second, equal_var=False).pvalue < alpha)


def splits(values: Sequence[float], seeds: int) -> list[tuple[list[float], list[float]]]:
    """Every way to cast `seeds` of `values` against `seeds` others, each pair of groups once (the test is
    two-sided, so a pair and its mirror are one comparison)."""
    return [([values[i] for i in first], [values[i] for i in second])
            for first, second in disjoint_groups(len(values), seeds) if first < second]


def resolution_false_positive_rate(values_by_model: Sequence[Sequence[float]], seeds: int, alpha: float) -> Rate:
    """One model's replicates split every way into two groups of `seeds`, as if they were two sizes: a split the
    test tells apart is a false alarm (same model, same size, nothing to tell)."""
    alarms = [tells_apart(a, b, alpha) for values in values_by_model for a, b in splits(values, seeds)]
    return Rate(sum(alarms), len(alarms))


def resolution_power(first: Sequence[float], second: Sequence[float], seeds: int, alpha: float) -> Rate:
    """Every `seeds`-subset of one model's replicates against every one of another's: the share told apart."""
    told = [tells_apart([first[i] for i in a], [second[j] for j in b], alpha)
            for a in combinations(range(len(first)), seeds) for b in combinations(range(len(second)), seeds)]
    return Rate(sum(told), len(told))
