"""The inertia curve: onset epoch vs parameter count, over every model this machine has.

Each point is an early-decided multi-seed onset (trainer.studies.early_decision). The curve is read three ways:
Spearman's rank correlation (does onset grow with size at all?), and two least-squares fits,
onset = a + b * params and onset = a + b * log10(params), compared by AIC (lower is better;
a difference under 2 is no real preference). Models with no onset by the last epoch asked are
right-censored: shown in the plot and table, left out of the fits (a number we do not have).
"""

from __future__ import annotations

from collections.abc import Iterable

from trainer.errors import WeightsMissing
from trainer.experiment import Experiment
from trainer.models.sources import resolve_model
from trainer.runs.trial import Trial
from trainer.stats.curve import InertiaCurve, OnsetPoint
from trainer.stats.movement import movement
from trainer.stats.verdict import Thresholds
from trainer.studies.early_decision import first_shift


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
        parameters = decision.runs[0].record.model.parameters
        moved = movement(list(decision.runs), [v.epoch for v in decision.verdicts], thresholds.min_gain)
        points.append(OnsetPoint(name, parameters, template.lr, decision.onset, decision.onset_interval,
                                 by_epoch, seeds, moved))
    return InertiaCurve(tuple(points), tuple(missing))


def _for_model(template: Experiment, name: str) -> Experiment:
    import dataclasses

    return dataclasses.replace(template, model=name)
