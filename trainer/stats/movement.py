"""How fast a model moves toward the behavior, as a continuous figure (issue 19: the inertia curve with power).

The onset epoch saturates: with five examples in one batch an epoch is one optimizer step, and at the notebook's
lr every offline model crosses the floor after the first. Two continuous readings of the same runs tell apart
models that all cross in one epoch:

- the **rate**: the margin gain beyond the seed's own null control at the first evaluated look, per optimizer step
  (nats/token per step), over the steps to that look;
- the **steps to the floor**: where the gain beyond the control first reaches the effect floor, interpolated
  linearly between looks (0 at step 0); censored (None) for a seed that never reaches it in the looks it has.

Each is a per-seed value; the experiment's figure is the seeds' mean with a 95% Student-t interval (scipy), so
sizes are compared with their uncertainty. A pure function of run records: nothing trains here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from trainer.cache.record import Run
from trainer.errors import ExpectationMisuse
from trainer.stats.verdict import margin_deltas

CONFIDENCE = 0.95
RATE, STEPS = "rate", "steps"  # the two continuous readings, as `by` names them


@dataclass(frozen=True)
class Estimate:
    """A mean over seeds with its 95% t-interval (the interval is the point itself for a single seed)."""

    mean: float
    low: float
    high: float
    seeds: int

    def words(self, unit: str, digits: int = 4) -> str:
        return f"{self.mean:.{digits}g} {unit} (95% CI {self.low:.{digits}g} .. {self.high:.{digits}g}, " \
               f"{self.seeds} seeds)"


@dataclass(frozen=True)
class Movement:
    """One experiment's rate and steps to the floor, per seed and over seeds."""

    rates: tuple[float, ...]  # per seed, nats/token per optimizer step, beyond its control
    crossings: tuple[float | None, ...]  # per seed, optimizer steps to the floor (None: not reached)
    floor: float
    first_look_steps: int

    @property
    def rate(self) -> Estimate:
        return estimate(self.rates)

    def per_seed(self, by: str) -> tuple[float | None, ...]:
        """Each seed's value of one reading: its rate, or its steps to the floor (None: not reached)."""
        return self.rates if by == RATE else self.crossings

    def over_seeds(self, by: str) -> Estimate | None:
        """The seeds' mean with its interval for one reading (None: too few seeds reached the floor)."""
        return self.rate if by == RATE else self.crossing

    @property
    def crossing(self) -> Estimate | None:
        """Over the seeds that reached the floor; None when fewer than half did (the figure would be censored)."""
        reached = [c for c in self.crossings if c is not None]
        return estimate(reached) if reached and 2 * len(reached) >= len(self.crossings) else None


def estimate(values) -> Estimate:
    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if len(values) < 2 or np.ptp(values) == 0:
        return Estimate(mean, mean, mean, len(values))
    low, high = stats.t.interval(CONFIDENCE, len(values) - 1, loc=mean, scale=stats.sem(values))
    return Estimate(mean, float(low), float(high), len(values))


def steps_through(run: Run, epoch: int) -> int:
    """Optimizer steps trained through `epoch`, from the record's log (5 examples in one batch: one step an epoch)."""
    return sum(log.steps for log in run.record.train_log if log.epoch <= epoch)


def beyond_control(run: Run, epoch: int) -> float:
    """The seed's mean margin gain at `epoch` minus its null control's (nats/token)."""
    if run.control is None:
        raise ExpectationMisuse(f"{run.model} seed {run.seed}: a rate beyond the control needs the run's null control")
    return float(margin_deltas(run, epoch).mean() - margin_deltas(run.control, epoch).mean())


def crossing_steps(points: list[tuple[int, float]], floor: float) -> float | None:
    """The first step at which a piecewise-linear curve through (0, 0) and `points` (steps, gain) reaches `floor`."""
    previous_steps, previous_gain = 0, 0.0
    for steps, gain in points:
        if gain >= floor:
            if gain == previous_gain:
                return float(steps)
            return previous_steps + (floor - previous_gain) / (gain - previous_gain) * (steps - previous_steps)
        previous_steps, previous_gain = steps, gain
    return None


def movement(runs: list[Run], epochs: list[int], floor: float) -> Movement:
    """Rate at the first of `epochs` and steps to `floor` over all of them, for each seed (its control attached)."""
    if not runs or not epochs:
        raise ExpectationMisuse("a movement needs at least one run and one evaluated epoch")
    rates, crossings = [], []
    for run in runs:
        points = [(steps_through(run, e), beyond_control(run, e)) for e in epochs]
        if points[0][0] <= 0:
            raise ExpectationMisuse(f"{run.model} seed {run.seed}: epoch {epochs[0]} trained no optimizer step; "
                                    f"rates are per step")
        rates.append(points[0][1] / points[0][0])
        crossings.append(crossing_steps(points, floor))
    return Movement(tuple(rates), tuple(crossings), floor, steps_through(runs[0], epochs[0]))
