"""What each kind of finding records in the ledger: its figures, each with the rule that says when it moved.

An entry is plain data (it is stored as JSON): {"subject": words, "figures": {name: figure}}, plus
"not measured": [models] when some of its models are not on this machine. A figure is {"value", "rule",
"unit"} plus "low"/"high" (interval rule) or "tolerance" (relative rule). The rules and their reasons
are in `trainer.ledger.compare`.
"""

from __future__ import annotations

import math
from typing import NotRequired, TypedDict

from trainer.cache.record import Run, TopLayer
from trainer.memory.measure import STATE_RATIO_TOLERANCE, Measured
from trainer.memory.planner import Plan
from trainer.stats.curve import ONSET, RATE, RATE_UNIT, WHAT, InertiaCurve, OnsetPoint
from trainer.stats.error_rates import Rate
from trainer.stats.metrics import MetricOnset
from trainer.studies.early_decision import Decision
from trainer.studies.step_costs import Costs
from trainer.studies.training_time import TrainingTimes, unit_of
from trainer.studies.undoing import Undoing
from trainer.units import format_bytes

EXACT, INTERVAL, RELATIVE, NOTED = "exact", "interval", "relative", "noted"
NATS = "nats/token"
BYTES = "bytes"
EPOCH = "epoch"
# A planned part is arithmetic over a traced step: 2% admits library bookkeeping, not a changed recipe.
PLANNED_TOLERANCE = 0.02
# A measured peak is the process's resident high-water mark (page-granular, allocator-dependent): a change
# beyond 5% is a different footprint, within it the same run measured again.
MEASURED_TOLERANCE = 0.05



class Figure(TypedDict):
    value: object
    rule: str
    unit: str
    low: NotRequired[float | None]
    high: NotRequired[float | None]
    tolerance: NotRequired[float]


Figures = dict[str, Figure]


def entry(subject: str, holds: bool, figures: Figures, not_measured: tuple[str, ...] = ()) -> dict:
    """One assertion's ledger entry: the verdict and the figures it rests on; `not_measured` names the models
    this machine lacks, whose figures keep their baseline."""
    data = {"subject": subject, "figures": {"verdict": exact("held" if holds else "not held"), **figures}}
    return data | ({"not measured": sorted(not_measured)} if not_measured else {})


def exact(value: object, unit: str = "") -> Figure:
    """Moved on any change (onsets, verdicts, counts)."""
    return {"value": _plain(value), "rule": EXACT, "unit": unit}


def interval(value: float, low: float, high: float, unit: str = "") -> Figure:
    """Moved when a new value falls outside [low, high], this measurement's 95% interval."""
    return {"value": _plain(value), "rule": INTERVAL, "unit": unit, "low": _plain(low), "high": _plain(high)}


def relative(value: float, tolerance: float, unit: str = "") -> Figure:
    """Moved when a new value is off this one by more than `tolerance` of it."""
    return {"value": _plain(value), "rule": RELATIVE, "unit": unit, "tolerance": tolerance}


def noted(value: object, unit: str = "") -> Figure:
    """Kept for the reader, never a move (timings, fits, p-values)."""
    return {"value": _plain(value), "rule": NOTED, "unit": unit}


def of_decision(decision: Decision) -> Figures:
    """Onset, each seed's onset, and each seed's gain at the deciding look with its 95% interval. Gains are
    named by the look, not its epoch, so an onset that moves from 2 to 4 shows its gain moving too."""
    look = decision.verdicts[-1]
    figures: Figures = {"onset epoch": exact(decision.onset, EPOCH),
                        "deciding look epoch": exact(look.epoch, EPOCH)}
    for index, run in enumerate(decision.runs):
        onset = next((v.epoch for v in decision.verdicts if v.per_seed[index].shifted), None)
        figures[f"seed {run.seed} onset epoch"] = exact(onset, EPOCH)
    for run, seed in zip(decision.runs, look.per_seed):
        low, high = seed.gain_ci
        figures[f"seed {run.seed} gain at the deciding look"] = interval(seed.gain, low, high, NATS)
    figures["mean gain at the deciding look"] = noted(look.mean_gain, NATS)
    figures["gain beyond the controls at the deciding look"] = noted(look.gain_beyond_controls, NATS)
    figures["onset 95% interval"] = noted(list(decision.onset_interval), EPOCH)
    return figures


def of_undoing(result: Undoing) -> Figures:
    """Whether each look read as shifted, and the gain beyond the placebo band at each (noted: the verdict is what
    must not move)."""
    figures: Figures = {"shifted at the switch": exact(result.switch.shifted),
                        "switch epoch": exact(result.switch.epoch, EPOCH),
                        "gain beyond the controls at the switch": noted(result.switch.gain_beyond_controls, NATS)}
    if result.end is not None:
        figures |= {"shifted after the placebo epochs": exact(result.end.shifted),
                    "gain beyond the controls after the placebo epochs": noted(result.end.gain_beyond_controls, NATS)}
    return figures


def of_sweep(decisions: list[Decision], recipes: list[str]) -> Figures:
    """Each configuration's onset (None: no shift; a configuration after the first that shifted is not trained,
    and is recorded as such)."""
    figures: Figures = {}
    for index, recipe in enumerate(recipes):
        onset = decisions[index].onset if index < len(decisions) else "not trained"
        figures[f"{recipe}: onset epoch"] = exact(onset, EPOCH)
    return figures


def of_training_time(times: TrainingTimes, model: str, epochs: int) -> Figures:
    """The unit the time falls in (what the claim is about) and whether it was measured or projected; the
    seconds themselves are noted (they vary with the machine)."""
    point = times.of(model)
    return {"unit": exact(unit_of(epochs * point.seconds)), "measured here": exact(point.measured),
            "seconds in all": noted(round(epochs * point.seconds, 1), "s"),
            "seconds per epoch range": noted([round(point.low, 2), round(point.high, 2)], "s")}


def of_onsets(onsets: dict[str, MetricOnset]) -> Figures:
    """Each metric's onset epoch (the per-metric questions read the first seed)."""
    return {f"{name} onset epoch": exact(onset.onset, EPOCH) for name, onset in onsets.items()}


def of_numerics(run: Run) -> Figures:
    """Where the first seed's run first went non-finite (and in what), and where and why it stopped (the kind of
    stop: a library rewording its error message is not a move; the full reason is noted)."""
    first = run.nonfinite_events[0] if run.nonfinite_events else None
    stopped = run.stopped
    return {"first non-finite step": exact(first.step if first else None),
            "first non-finite parts": exact(first.flags() if first else []),
            "stopped at": exact(f"epoch {stopped.epoch} step {stopped.step}" if stopped else None),
            "stopped by": exact(stopped.reason.split(":")[0] if stopped else None),
            "stop reason": noted(stopped.reason.splitlines()[0][:200] if stopped else None),
            "largest gradient norm": noted(max((e.grad_norm for e in run.train_log), default=None))}


def of_layers(top: list[TopLayer], epoch: int) -> Figures:
    """The most-changed decoder layers, noted: on SmolLM2 the top two differ by 0.01% of their change, so their
    order is float noise; whether they sit at the claimed depths is the verdict, compared exactly."""
    return {f"most-changed layers at epoch {epoch}": noted([t.layer for t in top])}


def of_plan(plan: Plan) -> Figures:
    """Every planned part (device and host) and both totals, within 2%; the counts exactly. The peak's event is
    noted: where two events tie at the peak (Phi-2's embedding backward and the dropout after it) the trace
    names either, and a name is not a figure."""
    figures: Figures = {"parameters": exact(plan.parameters), "trainable": exact(plan.trainable),
                        "peak event": noted(plan.peak_event),
                        "device total": relative(plan.device_total, PLANNED_TOLERANCE, BYTES)}
    figures |= {f"device {part}": relative(size, PLANNED_TOLERANCE, BYTES) for part, size in plan.device_parts.items()}
    if plan.host_parts:
        figures["host total"] = relative(plan.host_total, PLANNED_TOLERANCE, BYTES)
        figures |= {f"host {part}": relative(size, PLANNED_TOLERANCE, BYTES) for part, size in plan.host_parts.items()}
    return figures


def of_measured(measured: Measured) -> Figures:
    """The measured peak (absent when the run ran out), and the optimizer state's size per trained byte."""
    figures: Figures = {"ran out of memory": exact(measured.out_of_memory is not None or measured.killed)}
    if measured.peak_bytes is not None:
        figures["measured peak"] = relative(measured.peak_bytes, MEASURED_TOLERANCE, BYTES)
    if measured.trainable_bytes:
        ratio = measured.optimizer_state_bytes / measured.trainable_bytes
        figures["optimizer state / trained parameters"] = relative(ratio, STATE_RATIO_TOLERANCE)
    return figures


def of_rate(rate: Rate) -> Figures:
    """The rate with its exact (Clopper-Pearson) 95% interval."""
    low, high = rate.interval()
    return {"rate": interval(rate.value, low, high), "hits of trials": noted(f"{rate.hits}/{rate.trials}")}


def of_curve(curve: InertiaCurve, by: str = ONSET) -> Figures:
    """The reading's figure per model (an onset exactly; a rate or steps with its 95% interval over seeds), and
    the correlation and fits for the reader (functions of those figures)."""
    figures: Figures = {}
    for point in curve.points:
        figures |= _curve_point(point, by)
    rho, p = curve.spearman(by)
    figures["spearman rho"] = noted(rho)
    figures["spearman one-sided p"] = noted(p)
    for form, fit in (curve.fits(by) or {}).items():
        figures[f"{form} slope"] = noted(fit.slope)
        figures[f"{form} AIC"] = noted(fit.aic)
    return figures


def _curve_point(point: OnsetPoint, by: str) -> Figures:
    if by == ONSET:
        return {f"{point.model} onset epoch at lr {point.lr:g}": exact(point.onset, EPOCH)}
    moved = point.movement
    if moved is None:
        return {}
    estimate, unit = moved.over_seeds(by), RATE_UNIT if by == RATE else "steps"
    name = f"{point.model} {WHAT[by]} at lr {point.lr:g}"
    figure = exact(None, unit) if estimate is None else interval(estimate.mean, estimate.low, estimate.high, unit)
    return {name: figure, f"{name}, seeds": noted(list(moved.per_seed(by)), unit)}


def of_costs(costs: Costs) -> Figures:
    """Timings are this machine's and noisy: noted here; pytest-benchmark keeps and compares the absolute times."""
    return {f"median seconds per {costs.what}: {name}": noted(costs.median(name), "s") for name in costs.seconds}


def format_value(value: object, unit: str = "", digits: int | None = None) -> str:
    """A figure as the summary prints it; `digits` asks for more precision (two values that print alike)."""
    if value is None:
        return "none"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if unit == BYTES and digits is None:
        return format_bytes(value)
    if unit == NATS:
        return f"{value:+.{digits or 2}f}"
    return f"{value:g}" if isinstance(value, int) else f"{value:.{digits or 3}g}"


def not_measured_in(curve: InertiaCurve) -> tuple[str, ...]:
    """The curve's models that this machine lacks ("name: why" in `missing`)."""
    return tuple(reason.split(":", 1)[0] for reason in curve.missing)


def _plain(value: object) -> object:
    """JSON-safe and readable in a diff: 4 significant digits for floats, None for nan, lists for tuples."""
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return None if not math.isfinite(value) else float(f"{value:.4g}")
    return value
