"""Error-rate arithmetic of the decision rule over cached null and treatment runs (pure functions of records)."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations, permutations

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


