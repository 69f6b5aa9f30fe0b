"""The inertia curve as numbers: onset per model size, rank correlation, linear vs log-linear fits by AIC."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class OnsetPoint:
    model: str
    parameters: int
    lr: float
    onset: int | None  # None: no shift by `by_epoch` (censored)
    interval: tuple[float, float]
    by_epoch: int
    seeds: int


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

    def _xy(self) -> tuple[np.ndarray, np.ndarray]:
        observed = self.observed
        return (np.array([p.parameters for p in observed], dtype=float),
                np.array([p.onset for p in observed], dtype=float))


def _fit(form: str, xs: np.ndarray, ys: np.ndarray) -> Fit:
    x = np.log10(xs) if form == "log-linear" else xs
    if np.ptp(x) == 0:
        return Fit(form, float(ys.mean()), 0.0, float("nan"))
    line = stats.linregress(x, ys)
    residual = float(np.sum((ys - (line.intercept + line.slope * x)) ** 2))
    n, k = len(xs), 3  # intercept, slope, noise variance
    aic = n * math.log(max(residual, 1e-12) / n) + 2 * k
    return Fit(form, float(line.intercept), float(line.slope), aic)


