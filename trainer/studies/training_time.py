"""Training time against size: seconds per epoch of a recipe, measured on the models this machine has and
projected from FLOPs for the others (marked as a projection, never as a measurement).

An epoch costs about 6 x parameters x tokens FLOPs (forward and backward). The measured models give this
machine's throughput for the recipe; a model that is not here is projected at the slowest and fastest of
those throughputs, so its figure is a range. The tokens an epoch trains come from each measured model's own
tokenizer; a projected model takes the measured models' median (its tokenizer is not on this machine).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass

from trainer.errors import ConfigError, ExpectationMisuse, WeightsMissing
from trainer.experiment import Experiment
from trainer.judgement import Judgement, judged
from trainer.studies.step_costs import interleaved, training_step

# Each unit a claim may use, as the range of seconds it names.
UNITS = {"seconds": (0.0, 60.0), "minutes": (60.0, 3600.0), "hours": (3600.0, 86400.0), "days": (86400.0, math.inf)}


@dataclass(frozen=True)
class EpochTime:
    """Seconds per epoch of one model: measured (median of the rounds, with their min and max) or projected."""

    model: str
    parameters: int
    tokens: int
    seconds: float
    low: float
    high: float
    measured: bool

    @property
    def flops(self) -> float:
        return 6.0 * self.parameters * self.tokens

    def words(self) -> str:
        how = "measured" if self.measured else "projected from FLOPs, not measured"
        size = f"{self.parameters / 1e6:.0f}M" if self.parameters >= 10**7 else f"{self.parameters / 1e6:.2f}M"
        return (f"{self.model} ({size} params, {self.tokens} tokens): {duration(self.seconds)} "
                f"per epoch ({duration(self.low)} .. {duration(self.high)}; {how})")


@dataclass(frozen=True)
class TrainingTimes:
    recipe: str  # the recipe timed, in words
    points: tuple[EpochTime, ...]
    missing: tuple[str, ...]  # models neither measured nor projected, with the reason

    def of(self, model: str) -> EpochTime:
        for point in self.points:
            if point.model == model:
                return point
        raise ExpectationMisuse(f"{model!r} was not timed; timed: {[p.model for p in self.points]} "
                                f"({'; '.join(self.missing) or 'pass it to training_times'})")

    def judge_takes(self, model: str, epochs: int, unit: str) -> Judgement:
        """`epochs` of the recipe on `model` take `unit` (seconds, minutes, hours or days): the estimate and
        its whole range fall in that unit's span."""
        if unit not in UNITS:
            raise ExpectationMisuse(f"unit {unit!r}: must be one of {list(UNITS)}")
        point = self.of(model)
        total, low, high = (epochs * s for s in (point.seconds, point.low, point.high))
        start, end = UNITS[unit]
        holds = start <= low and high < end
        words = (f"{epochs} epochs of {self.recipe} on {point.words()}: {duration(total)} in all "
                 f"({duration(low)} .. {duration(high)}), which is {unit_of(total)}; claimed: {unit}.\n"
                 + "\n".join(f"  {p.words()}" for p in self.points))
        return judged(holds, words)


def duration(seconds: float) -> str:
    for unit, size in (("days", 86400.0), ("hours", 3600.0), ("minutes", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.2f} s"


def unit_of(seconds: float) -> str:
    return next(name for name, (start, end) in UNITS.items() if start <= seconds < end)


def training_times(template: Experiment, models: list[str], rounds: int = 3) -> TrainingTimes:
    """Time one epoch of `template` (its recipe, on the CPU, one process) on each model this machine has, in
    interleaved rounds; project the others from FLOPs at the measured throughputs."""
    from trainer.models.configs import parameter_count
    from trainer.models.sources import resolve_model

    steps, missing, absent = {}, [], []
    for model in models:
        try:
            resolve_model(model).check_available()
        except WeightsMissing as error:
            absent.append((model, str(error)))
            continue
        _, steps[model] = training_step(dataclasses.replace(template, model=model, device="cpu", processes=1))
    if not steps:
        raise ExpectationMisuse(f"none of {models} is on this machine, so nothing can be measured and nothing "
                                f"projected; provide the weights of one of them")
    seconds = interleaved(steps, rounds)
    measured = [EpochTime(model, steps[model].parameters, steps[model].tokens, statistics.median(times), min(times),
                          max(times), True) for model, times in seconds.items()]
    throughputs = [p.flops / p.seconds for p in measured]
    tokens = int(statistics.median(p.tokens for p in measured))
    projected = []
    for model, reason in absent:
        try:
            parameters = parameter_count(resolve_model(model).architecture())
        except ConfigError as error:
            missing.append(f"{model}: neither measured ({reason}) nor projected ({error})")
            continue
        flops = 6.0 * parameters * tokens
        projected.append(EpochTime(model, parameters, tokens, flops / statistics.median(throughputs),
                                   flops / max(throughputs), flops / min(throughputs), False))
    points = tuple(sorted(measured + projected, key=lambda p: p.parameters))
    return TrainingTimes(template.recipe + f", {template.batch_size}-example batches, fp32, CPU", points,
                         tuple(missing))
