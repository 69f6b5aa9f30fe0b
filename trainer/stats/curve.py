"""The inertia curve as numbers: how fast each model size moves, read three ways, with rank correlation and
linear vs log-linear fits by AIC.

Readings (issue 19): the **onset** epoch (one value per model; saturates when every model shifts in its first
epoch), and two continuous readings of the same runs, one value per seed: the **rate** (gain beyond the control
per optimizer step at the first look; a slower model has a lower rate) and the **steps** to the effect floor
(a slower model needs more). "Slower with size" is the same question of each: Spearman's rho in the reading's
slower direction, its one-sided p from a permutation test, and the two fits.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from trainer.errors import ExpectationMisuse
from trainer.judgement import Judgement, judged
from trainer.stats.movement import RATE, STEPS, Movement
from trainer.stats.verdict import epoch_words

# A difference in AIC of 2 or more is the usual threshold for one model being better supported (Burnham &
# Anderson); below it the two forms fit the points about equally well.
AIC_MARGIN = 2.0
ONSET = "onset"
READINGS = (ONSET, RATE, STEPS)
WHAT = {ONSET: "onset", RATE: "rate", STEPS: "steps to the floor"}  # each reading in words
RATE_UNIT = "nats/token per step"
# A permutation p enumerates every ordering up to this many, so the p of a curve of up to 9 points (3 models x 3
# seeds: 362,880 orderings) is exact; beyond (12 points have 479M) it draws DRAWN orderings with a fixed seed
# (standard error 0.0015 at p = 0.05).
EXACT_UP_TO = 400_000
DRAWN = 20_000


@dataclass(frozen=True)
class OnsetPoint:
    model: str
    parameters: int
    lr: float
    onset: int | None  # None: no shift by `by_epoch` (censored)
    interval: tuple[float, float]
    by_epoch: int
    seeds: int
    movement: Movement | None = None  # the continuous reading of the same runs (rate, steps to the floor)


@dataclass(frozen=True)
class ReportedOnset:
    """An onset someone reported and this suite did not measure (e.g. the notebook's), drawn beside the measured
    points and marked as reported; never part of the statistics."""

    model: str
    parameters: int
    onset: int
    at_least: bool = False  # "10+": the shift came at this epoch or later
    source: str = "notebook"

    def words(self) -> str:
        return (f"{self.source} reports {self.model} ({self.parameters / 1e6:.0f}M params): onset "
                f"{self.onset}{'+' if self.at_least else ''} epochs (reported, not measured here)")


@dataclass(frozen=True)
class Fit:
    form: str  # "linear" or "log-linear"
    intercept: float
    slope: float
    aic: float

    def predict(self, parameters: np.ndarray) -> np.ndarray:
        x = np.log10(parameters) if self.form == "log-linear" else parameters
        return self.intercept + self.slope * x


@dataclass(frozen=True)
class Reading:
    """The curve read one way: (parameters, value) points and the direction in which "slower" lies."""

    parameters: np.ndarray
    values: np.ndarray
    what: str  # WHAT[by], for messages
    slower_is_higher: bool  # onsets and steps grow for a slower model; its rate falls
    left_out: int = 0  # censored values (no onset, or a seed that never reached the floor)

    @property
    def alternative(self) -> str:
        return "greater" if self.slower_is_higher else "less"

    def slower(self, slope: float) -> bool:
        """Whether a fitted slope or a correlation points the slower way."""
        return slope > 0 if self.slower_is_higher else slope < 0

    def trend(self, holds: bool) -> str:
        return {(True, True): "grows", (True, False): "does not grow", (False, True): "falls",
                (False, False): "does not fall"}[(self.slower_is_higher, holds)]

    def smallest_p(self) -> float:
        """The p of the most extreme ordering these values allow: at or above alpha, the reading cannot decide
        (3 distinct points: 1/6; 4: 1/24)."""
        order = np.argsort(np.argsort(self.parameters, kind="stable"), kind="stable")
        best = np.sort(self.values)[order] if self.slower_is_higher else np.sort(self.values)[::-1][order]
        return rank_correlation(self.parameters, best, self.alternative)[1]


@dataclass(frozen=True)
class InertiaCurve:
    points: tuple[OnsetPoint, ...]
    missing: tuple[str, ...]  # models skipped for want of weights, with the reason

    @property
    def observed(self) -> list[OnsetPoint]:
        return [p for p in self.points if p.onset is not None]

    def reading(self, by: str = ONSET) -> Reading:
        """The points of one reading: onsets per model (censored left out), rates or reached steps per seed."""
        if by not in READINGS:
            raise ExpectationMisuse(f"by={by!r}: an inertia curve is read by one of {', '.join(READINGS)}")
        if by == ONSET:
            every = [(p.parameters, p.onset) for p in self.points]
        else:
            every = [(p.parameters, v) for p in self.points if p.movement is not None for v in p.movement.per_seed(by)]
        kept = [(n, v) for n, v in every if v is not None]
        return Reading(np.array([n for n, _ in kept], dtype=float), np.array([v for _, v in kept], dtype=float),
                       WHAT[by], by != RATE, len(every) - len(kept))

    def spearman(self, by: str = ONSET) -> tuple[float, float]:
        """(rho, one-sided permutation p toward "slower with size"); nan when it cannot be computed."""
        reading = self.reading(by)
        return rank_correlation(reading.parameters, reading.values, reading.alternative)

    def fits(self, by: str = ONSET) -> dict[str, Fit] | None:
        """Linear and log-linear least-squares fits with their AIC; None when fewer than 3 points."""
        reading = self.reading(by)
        if len(reading.values) < 3:
            return None
        return {form: _fit(form, reading.parameters, reading.values) for form in ("linear", "log-linear")}

    def judge_slower_with_size(self, alpha: float, by: str = ONSET) -> Judgement:
        """The reading rank-correlates with parameter count the slower way (one-sided permutation p < alpha)."""
        reading = self.reading(by)
        rho, p = self.spearman(by)
        holds = reading.slower(rho) and p < alpha
        sign = ">" if reading.slower_is_higher else "<"
        return judged(holds, f"{reading.what} {reading.trend(holds)} with size: Spearman rho {rho:.2f}, one-sided p "
                             f"{p:.3g} over {len(reading.values)} points{_left_out(reading)} (needs rho {sign} 0 and "
                             f"p < {alpha}){_undecidable(reading, alpha)}.\n{self.lines()}")

    def judge_log_linear_fits_better(self, by: str = ONSET) -> Judgement:
        """The reading moves the slower way with size and its log-linear fit beats the linear one by AIC_MARGIN."""
        reading, fits = self.reading(by), self.fits(by)
        if fits is None:
            return judged(False, f"too few points to fit a curve of {reading.what} (need 3).\n{self.lines()}")
        linear, log = fits["linear"], fits["log-linear"]
        holds = reading.slower(log.slope) and log.aic + AIC_MARGIN <= linear.aic
        return judged(holds, f"log-linear {reading.what} = {log.intercept:.3g} + {log.slope:.3g}*log10(params) (AIC "
                             f"{log.aic:.1f}) vs linear {reading.what} = {linear.intercept:.3g} + {linear.slope:.3g}"
                             f"*params (AIC {linear.aic:.1f}){_left_out(reading)}: needs a slope toward slower "
                             f"and an AIC at least {AIC_MARGIN:g} lower.\n{self.lines()}")

    def lines(self) -> str:
        """Each model's onset with its interval, its movement, and the models not measured."""
        lines = []
        for p in self.points:
            onset = f"epoch {p.onset}" if p.onset is not None else f"none by epoch {p.by_epoch}"
            low, high = p.interval
            lines.append(f"  {p.model:<20} {p.parameters / 1e6:7.1f}M params  lr {p.lr:g}: onset {onset} "
                         f"(95% CI {epoch_words(low)} .. {epoch_words(high)}, {p.seeds} seeds)"
                         + (f"\n{'':24}{movement_words(p.movement)}" if p.movement is not None else ""))
        return "\n".join(lines + [f"  not measured: {m}" for m in self.missing])

    def statistics(self) -> list[str]:
        """Every reading's correlation and fits, one line each, for the evidence."""
        lines = []
        for by in READINGS:
            rho, p = self.spearman(by)
            reading = self.reading(by)
            lines.append(f"{reading.what}: Spearman rho {rho:.3f}, one-sided p {p:.3g} toward slower with size, "
                         f"{len(reading.values)} points{_left_out(reading)}")
            lines += [f"  {f.form}: {reading.what} = {f.intercept:.4g} + {f.slope:.4g} * "
                      f"{'log10(params)' if f.form == 'log-linear' else 'params'}, AIC {f.aic:.2f}"
                      for f in (self.fits(by) or {}).values()]
        return lines


def rank_correlation(xs: np.ndarray, ys: np.ndarray, alternative: str) -> tuple[float, float]:
    """Spearman's rho and its one-sided p by permutation (exact up to EXACT_UP_TO orderings, else DRAWN of them
    with a fixed seed, so a figure repeats); nan for fewer than 3 points, a non-finite value or no spread. scipy's
    spearmanr p is a t approximation, too liberal for 4-12 points with ties (3 seeds share a size): with 3 seeds
    against 3 it gives p 0.011 where the exact p is 0.05. Remembered per points: a curve's verdict, ledger figures
    and evidence ask for the same correlation, and a permutation of 9 points takes about half a second."""
    xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    return _permutation_spearman(tuple(xs.tolist()), tuple(ys.tolist()), alternative)


@functools.lru_cache(maxsize=256)
def _permutation_spearman(xs: tuple[float, ...], ys: tuple[float, ...], alternative: str) -> tuple[float, float]:
    xs, ys = np.array(xs), np.array(ys)
    if len(ys) < 3 or not np.isfinite(ys).all() or np.ptp(ys) == 0 or np.ptp(xs) == 0:
        return float("nan"), float("nan")
    x_centred = stats.rankdata(xs) - (len(xs) + 1) / 2

    def rho(y: np.ndarray, axis: int = -1) -> np.ndarray:
        y_centred = stats.rankdata(y, axis=axis) - (y.shape[axis] + 1) / 2
        return (y_centred * x_centred).sum(axis=axis) / np.sqrt((y_centred ** 2).sum(axis=axis)
                                                                * (x_centred ** 2).sum())

    orderings = EXACT_UP_TO if math.factorial(len(ys)) <= EXACT_UP_TO else DRAWN
    test = stats.permutation_test((ys,), rho, permutation_type="pairings", vectorized=True,
                                  n_resamples=orderings, alternative=alternative, rng=np.random.default_rng(0))
    return float(test.statistic), float(test.pvalue)


def movement_words(moved: Movement) -> str:
    crossing = moved.crossing
    reached = crossing.words("steps", 3) if crossing is not None else "not reached by half the seeds"
    return (f"rate {moved.rate.words(RATE_UNIT, 3)} beyond the controls; steps to the "
            f"{moved.floor:g} floor: {reached}")


def _undecidable(reading: Reading, alpha: float) -> str:
    """Said when no ordering of these points could reach alpha: the reading has no power here, whatever it shows."""
    smallest = reading.smallest_p()  # nan where no correlation can be computed: nothing to say then
    if not smallest >= alpha:
        return ""
    return (f"; with {len(reading.values)} points no ordering reaches p < {alpha} (the smallest is {smallest:.3g}), "
            f"so this reading cannot decide here")


def _left_out(reading: Reading) -> str:
    return f", {reading.left_out} censored left out" if reading.left_out else ""


def _fit(form: str, xs: np.ndarray, ys: np.ndarray) -> Fit:
    x = np.log10(xs) if form == "log-linear" else xs
    if np.ptp(x) == 0:
        return Fit(form, float(ys.mean()), 0.0, float("nan"))
    line = stats.linregress(x, ys)
    residual = float(np.sum((ys - (line.intercept + line.slope * x)) ** 2))
    n, k = len(xs), 3  # intercept, slope, noise variance
    aic = n * math.log(max(residual, 1e-12) / n) + 2 * k
    return Fit(form, float(line.intercept), float(line.slope), aic)
