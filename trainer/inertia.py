"""The inertia curve: onset epoch vs parameter count, over every model this machine has.

Each point is an early-decided multi-seed onset (trainer.decision). The curve is read three ways:
Spearman's rank correlation (does onset grow with size at all?), and two least-squares fits,
onset = a + b * params and onset = a + b * log10(params), compared by AIC (lower is better;
a difference under 2 is no real preference). Models with no onset by the last epoch asked are
right-censored: shown in the plot and table, left out of the fits (a number we do not have).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy import stats

from trainer.decision import Trial, first_shift
from trainer.errors import WeightsMissing
from trainer.experiment import Experiment
from trainer.models import resolve_model
from trainer.report import figure_png, new_figure
from trainer.verdict import Thresholds


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


def measure_curve(template: Experiment, models: Iterable[str], by_epoch: int, seeds: int,
                  thresholds: Thresholds, progress: bool = True) -> InertiaCurve:
    """Onset (early-decided over `seeds`) for each available model, with `template`'s other settings."""
    points, missing = [], []
    for name in models:
        try:
            resolve_model(name).check_available()
        except WeightsMissing as error:
            missing.append(f"{name}: {error}")
            continue
        trial = Trial(_for_model(template, name), seeds, progress)
        decision = first_shift(trial, by_epoch, thresholds, f"onset by epoch {by_epoch}")
        parameters = decision.runs[0].body["model"]["parameters"]
        points.append(OnsetPoint(name, parameters, template.lr, decision.onset, decision.onset_interval,
                                 by_epoch, seeds))
    return InertiaCurve(tuple(points), tuple(missing))


def _for_model(template: Experiment, name: str) -> Experiment:
    import dataclasses

    return dataclasses.replace(template, model=name)


def curve_table_csv(curves: Iterable[InertiaCurve]) -> str:
    lines = ["model,parameters,lr,onset,onset_ci_low,onset_ci_high,by_epoch,seeds"]
    for curve in curves:
        for p in curve.points:
            lines.append(",".join(str(c) for c in (p.model, p.parameters, p.lr, "" if p.onset is None else p.onset,
                                                   p.interval[0], p.interval[1], p.by_epoch, p.seeds)))
    return "\n".join(lines) + "\n"


def curve_plot_png(curves: Iterable[InertiaCurve], title: str) -> bytes:
    """Onset vs parameters (log axis), one colour per learning rate, 95% intervals, censored points as ^."""
    fig, axis = new_figure(size=(8, 5))
    for curve, color in zip(curves, ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple")):
        lr = curve.points[0].lr if curve.points else float("nan")
        for p in curve.points:
            if p.onset is None:
                axis.scatter(p.parameters, p.by_epoch + 0.5, marker="^", color=color)
            else:
                low, high = p.interval
                high = p.by_epoch + 0.5 if math.isinf(high) else high
                axis.errorbar(p.parameters, p.onset, yerr=[[p.onset - low], [max(high - p.onset, 0)]], fmt="o",
                              color=color, capsize=3)
            axis.annotate(p.model, (p.parameters, p.onset or p.by_epoch + 0.5), fontsize=7,
                          xytext=(4, 4), textcoords="offset points")
        _plot_fits(axis, curve, color, f"lr={lr:g}")
    axis.set_xscale("log")
    axis.set(xlabel="parameters", ylabel="onset epoch (first epoch a majority of seeds shifted)", title=title)
    axis.legend(fontsize=7, loc="upper left")
    return figure_png(fig)


def _plot_fits(axis, curve: InertiaCurve, color: str, label: str) -> None:
    fits = curve.fits()
    observed = curve.observed
    if not observed:
        axis.plot([], [], color=color, label=f"{label}: no onset observed")
        return
    if fits is None:
        axis.plot([], [], color=color, label=f"{label}: too few onsets to fit")
        return
    xs = np.geomspace(min(p.parameters for p in observed), max(p.parameters for p in observed), 50)
    for fit, style in ((fits["linear"], "--"), (fits["log-linear"], ":")):
        axis.plot(xs, fit.predict(xs), style, color=color, label=f"{label} {fit.form} (AIC {fit.aic:.1f})")
