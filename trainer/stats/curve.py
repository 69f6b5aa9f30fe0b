"""The inertia curve as numbers: onset per model size, rank correlation, linear vs log-linear fits by AIC."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from trainer.judgement import Judgement, judged
from trainer.stats.movement import Movement
from trainer.stats.verdict import epoch_words

# A difference in AIC of 2 or more is the usual threshold for one model being better supported (Burnham &
# Anderson); below it the two forms fit the points about equally well.
AIC_MARGIN = 2.0


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
class InertiaCurve:
    points: tuple[OnsetPoint, ...]
    missing: tuple[str, ...]  # models skipped for want of weights, with the reason

    @property
    def observed(self) -> list[OnsetPoint]:
        return [p for p in self.points if p.onset is not None]

    def spearman(self) -> tuple[float, float]:
        """(rho, one-sided p for rho > 0) over observed points; nan when fewer than 3 or all ties."""
        xs, ys = self._xy()
        if len(xs) < 3 or np.ptp(ys) == 0:
            return float("nan"), float("nan")
        result = stats.spearmanr(xs, ys, alternative="greater")
        return float(result.statistic), float(result.pvalue)

    def fits(self) -> dict[str, Fit] | None:
        """Linear and log-linear least-squares fits with their AIC; None when fewer than 3 points."""
        xs, ys = self._xy()
        if len(xs) < 3:
            return None
        return {form: _fit(form, xs, ys) for form in ("linear", "log-linear")}

    def judge_increases_with_size(self, alpha: float) -> Judgement:
        """Onset rank-correlates positively with parameter count (Spearman, one-sided p < alpha)."""
        rho, p = self.spearman()
        holds = rho > 0 and p < alpha
        return judged(holds, f"onset {'grows' if holds else 'does not grow'} with size: Spearman rho {rho:.2f}, "
                             f"one-sided p {p:.3g} (needs rho > 0 and p < {alpha}).\n{self.lines()}")

    def judge_log_linear_fits_better(self) -> Judgement:
        """Onset grows (slope > 0) and onset ~ log(params) beats onset ~ params by AIC >= AIC_MARGIN."""
        fits = self.fits()
        if fits is None:
            return judged(False, f"too few onsets to fit a curve (need 3).\n{self.lines()}")
        linear, log = fits["linear"], fits["log-linear"]
        holds = log.slope > 0 and log.aic + AIC_MARGIN <= linear.aic
        return judged(holds, f"log-linear onset = {log.intercept:.2f} + {log.slope:.2f}*log10(params) (AIC "
                             f"{log.aic:.1f}) vs linear onset = {linear.intercept:.2f} + {linear.slope:.3g}*params "
                             f"(AIC {linear.aic:.1f}): needs a positive slope and an AIC at least {AIC_MARGIN:g} "
                             f"lower.\n{self.lines()}")

    def lines(self) -> str:
        """Each model's onset with its interval, and the models not measured."""
        lines = []
        for p in self.points:
            onset = f"epoch {p.onset}" if p.onset is not None else f"none by epoch {p.by_epoch}"
            low, high = p.interval
            lines.append(f"  {p.model:<20} {p.parameters / 1e6:7.1f}M params  lr {p.lr:g}: onset {onset} "
                         f"(95% CI {epoch_words(low)} .. {epoch_words(high)}, {p.seeds} seeds)"
                         + (f"\n{'':24}{movement_words(p.movement)}" if p.movement is not None else ""))
        return "\n".join(lines + [f"  not measured: {m}" for m in self.missing])

    def _xy(self) -> tuple[np.ndarray, np.ndarray]:
        observed = self.observed
        return (np.array([p.parameters for p in observed], dtype=float),
                np.array([p.onset for p in observed], dtype=float))


def movement_words(moved: Movement) -> str:
    crossing = moved.crossing
    reached = crossing.words("steps", 3) if crossing is not None else "not reached by half the seeds"
    return (f"rate {moved.rate.words('nats/token per step', 3)} beyond the controls; steps to the "
            f"{moved.floor:g} floor: {reached}")


def _fit(form: str, xs: np.ndarray, ys: np.ndarray) -> Fit:
    x = np.log10(xs) if form == "log-linear" else xs
    if np.ptp(x) == 0:
        return Fit(form, float(ys.mean()), 0.0, float("nan"))
    line = stats.linregress(x, ys)
    residual = float(np.sum((ys - (line.intercept + line.slope * x)) ** 2))
    n, k = len(xs), 3  # intercept, slope, noise variance
    aic = n * math.log(max(residual, 1e-12) / n) + 2 * k
    return Fit(form, float(line.intercept), float(line.slope), aic)


