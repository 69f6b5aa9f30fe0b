"""Plots for readers: shift by epoch, weight change per layer, the numerics timeline, memory breakdowns and
the inertia curve (PNG bytes; no pytest, no Allure here)."""

from __future__ import annotations

import io
import math
from collections.abc import Iterable

import numpy as np

from trainer.cache.record import Run
from trainer.stats.curve import ONSET, WHAT, InertiaCurve, ReportedOnset
from trainer.stats.movement import RATE, STEPS
from trainer.stats.verdict import EpochVerdict, bootstrap_ci
from trainer.studies.training_time import TrainingTimes


def new_figure(*grid: int, size: tuple[float, float]):
    """A headless matplotlib figure (no display here, in CI or on the GPU machine)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*grid, figsize=size)


def figure_png(fig) -> bytes:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def shift_plot_png(run: Run, verdicts: list[EpochVerdict], title: str) -> bytes:
    """Mean margin gain (with a 95% interval over probes) per epoch, the control beside it, and side metrics."""
    fig, (left, right) = new_figure(1, 2, size=(11, 4.8))
    _plot_gain(left, run, "tuned", "tab:blue")
    if run.control is not None:
        _plot_gain(left, run.control, "null control", "tab:gray")
    for v in verdicts:
        if v.shifted:
            left.axvline(v.epoch, color="tab:green", ls=":", lw=1)
    left.axhline(0, color="black", lw=0.5)
    left.set(xlabel="epoch", ylabel="stance margin gain vs epoch 0 (nats/token)", title=title)
    left.legend(loc="upper left", fontsize=8)
    _plot_text_metrics(right, run, "", "-")
    if run.control is not None:
        _plot_text_metrics(right, run.control, " (control)", "--")
    right.set(xlabel="epoch", title="behavior in text vs distance moved")
    right.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=7)
    return figure_png(fig)


def _plot_text_metrics(axis, run: Run, suffix: str, style: str) -> None:
    """Marker rate, share of greedy answers differing from epoch 0 (the notebook's N/M), KL from base."""
    evaluations = run.evaluations
    epochs = [e.epoch for e in evaluations]
    texts = [e for e in evaluations if e.has_text]  # runs with generate=False have none after epoch 0
    n = len(run.baseline.generations)
    axis.plot([e.epoch for e in texts], [e.marker_rate for e in texts], "o" + style, color="tab:blue",
              label="marker rate in generations" + suffix)
    axis.plot([e.epoch for e in texts], [e.differ_from_baseline / n for e in texts], "s" + style,
              color="tab:orange", label="share differing from epoch 0" + suffix)
    axis.plot(epochs, [e.kl_from_base for e in evaluations], "^" + style, color="tab:green",
              label="KL from base, neutral prompts (nats)" + suffix)


def _plot_gain(axis, run: Run, label: str, color: str) -> None:
    """Mean gain over probes per epoch with its 95% bootstrap interval."""
    base = np.asarray(run.baseline.margins)
    epochs, means, below, above = [], [], [], []
    for entry in run.evaluations:
        deltas = np.asarray(entry.margins) - base
        low, high = bootstrap_ci(deltas)
        epochs.append(entry.epoch)
        means.append(deltas.mean())
        below.append(deltas.mean() - low)
        above.append(high - deltas.mean())
    axis.errorbar(epochs, means, yerr=[below, above], marker="o", capsize=3, label=f"{label} (95% bootstrap CI)",
                  color=color)


def layer_change_png(run: Run, epoch: int, title: str) -> bytes:
    """Relative weight change per decoder layer at `epoch`, the top layers marked with their depth."""
    layers = run.evaluation(epoch).layers
    changes = layers.relative_change
    fig, axis = new_figure(1, 1, size=(9, 4))
    top = {t.layer for t in layers.top}
    axis.bar(range(len(changes)), changes, color=["tab:red" if i in top else "tab:blue" for i in range(len(changes))])
    for t in layers.top:
        axis.annotate(f"{t.depth:.0%}", (t.layer, t.relative_change), ha="center", va="bottom", fontsize=8)
    axis.set(xlabel="decoder layer", ylabel="||W - W0|| / ||W0||", title=f"{title} (epoch {epoch})")
    return figure_png(fig)


def numerics_timeline_png(run: Run, title: str) -> bytes:
    """Loss and largest gradient norm per epoch (log scale), with the steps that went non-finite marked."""
    log = run.train_log
    fig, axis = new_figure(1, 1, size=(9, 4))
    epochs = [e.epoch for e in log]
    for key, color in (("loss", "tab:blue"), ("grad_norm", "tab:orange")):
        values = [getattr(e, key) if np.isfinite(getattr(e, key)) else np.nan for e in log]
        axis.plot(epochs, values, marker="o", color=color, label=key)
    for entry in log:
        for event in entry.nonfinite:
            what = ", ".join(event.flags())
            axis.axvline(entry.epoch, color="tab:red", ls=":", lw=1)
            axis.annotate(f"step {event.step}: {what}", (entry.epoch, 1), xycoords=("data", "axes fraction"),
                          rotation=90, va="top", fontsize=7, color="tab:red")
    if run.stopped:
        axis.set_title(f"{title}: stopped at step {run.stopped.step} ({run.stopped.reason})", fontsize=9)
    else:
        axis.set_title(title)
    axis.set_yscale("log")
    axis.set(xlabel="epoch")
    axis.legend(fontsize=8)
    return figure_png(fig)


def memory_breakdown_png(plan, budget: int | None, title: str) -> bytes:
    """Stacked bars of a plan's parts on the device and on the host, with the budget as a line (GiB)."""
    from trainer.memory.planner import PARTS

    fig, axis = new_figure(1, 1, size=(7, 4.5))
    sides = [("device", plan.device_parts)] + ([("host", plan.host_parts)] if plan.host_parts else [])
    colors = dict(zip(PARTS, ("tab:blue", "tab:orange", "tab:red", "tab:pink", "tab:green", "tab:purple",
                              "tab:gray")))
    labelled: set[str] = set()
    for x, (_, parts) in enumerate(sides):
        bottom = 0.0
        for part in PARTS:
            size = parts.get(part, 0) / 2**30
            if size:
                axis.bar(x, size, bottom=bottom, color=colors[part], label=None if part in labelled else part)
                labelled.add(part)
                bottom += size
        axis.annotate(f"{bottom:.2f} GiB", (x, bottom), ha="center", va="bottom", fontsize=9)
    if budget:
        axis.axhline(budget / 2**30, color="black", linestyle="--", label=f"budget {budget / 2**30:.2f} GiB")
    axis.set_xticks(range(len(sides)), [("GPU" if plan.device == "cuda" else "CPU") if s == "device" else "host"
                                        for s, _ in sides])
    axis.set(ylabel="GiB at the peak", title=title)
    axis.legend(fontsize=8, loc="upper right")
    return figure_png(fig)


def curve_plot_png(curves: Iterable[InertiaCurve], title: str, reported: Iterable[ReportedOnset] = ()) -> bytes:
    """Onset vs parameters (log axis), one colour per learning rate, 95% intervals, censored points as ^;
    onsets reported elsewhere (the notebook's) as hollow grey diamonds, labelled as reported."""
    fig, axis = new_figure(size=(8, 5))
    for point in reported:
        axis.scatter(point.parameters, point.onset, marker="D", facecolors="none", edgecolors="grey", s=60,
                     label=f"{point.source}: {point.model}, {point.onset}{'+' if point.at_least else ''} "
                           f"(reported, not measured)")
        axis.annotate(f"{point.model} ({point.source})", (point.parameters, point.onset), fontsize=7, color="grey",
                      xytext=(4, -10), textcoords="offset points")
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


def movement_plot_png(curve: InertiaCurve, title: str) -> bytes:
    """The continuous readings against parameters (log axis): each seed as a dot, the seeds' mean with its 95%
    t-interval, the two fits dashed (linear) and dotted (log-linear); seeds that never reached the floor as ^."""
    fig, axes = new_figure(1, 2, size=(11, 4.5))
    for axis, by in zip(axes, (RATE, STEPS)):
        top = 0.0
        for p in curve.points:
            if p.movement is not None:
                top = max(top, _plot_seeds(axis, p, by))
        for p in curve.points:
            censored = p.movement.per_seed(by).count(None) if p.movement else 0
            if censored:
                axis.scatter(p.parameters, top * 1.1 or 1.0, marker="^", color="tab:red",
                             label=f"{p.model}: {censored} seed(s) never reached the floor")
        rho, p = curve.spearman(by)
        axis.plot([], [], " ", label=f"Spearman rho {rho:.2f}, one-sided p {p:.2g}")
        _plot_fits(axis, curve, "grey", "", by)
        axis.set_xscale("log")
        axis.set(xlabel="parameters", title=f"{WHAT[by]} by size (mean over seeds, 95% CI)",
                 ylabel="gain beyond the control per step (nats/token)" if by == RATE
                 else "optimizer steps to the floor, beyond the control")
        axis.legend(fontsize=7, loc="best")
    fig.suptitle(title.replace("onset vs size", "movement vs size"), fontsize=10)
    return figure_png(fig)


def _plot_seeds(axis, point, by: str) -> float:
    """One model's seeds as dots and their mean with its interval; returns the highest value drawn."""
    reached = [v for v in point.movement.per_seed(by) if v is not None]
    axis.scatter([point.parameters] * len(reached), reached, color="tab:blue", alpha=0.4, s=14)
    summary = point.movement.over_seeds(by)
    if summary is not None:
        axis.errorbar(point.parameters, summary.mean, yerr=[[summary.mean - summary.low],
                                                            [summary.high - summary.mean]], fmt="o", color="black",
                      capsize=4)
    top = max(reached, default=0.0)
    axis.annotate(point.model, (point.parameters, summary.mean if summary else top), fontsize=7, xytext=(4, 4),
                  textcoords="offset points")
    return top


def _plot_fits(axis, curve: InertiaCurve, color: str, label: str, by: str = ONSET) -> None:
    """The reading's linear (dashed) and log-linear (dotted) fits over the parameters it has points at, or a
    legend entry saying why there are none."""
    fits, reading = curve.fits(by), curve.reading(by)
    if not len(reading.values):
        axis.plot([], [], color=color, label=f"{label}: no {reading.what} observed")
        return
    if fits is None:
        axis.plot([], [], color=color, label=f"{label}: too few points of {reading.what} to fit")
        return
    xs = np.geomspace(reading.parameters.min(), reading.parameters.max(), 50)
    for fit, style in ((fits["linear"], "--"), (fits["log-linear"], ":")):
        axis.plot(xs, fit.predict(xs), style, color=color, label=f"{label} {fit.form} (AIC {fit.aic:.1f})".strip())


def training_time_png(times: TrainingTimes) -> bytes:
    """Seconds per epoch against parameters (log-log): measured points filled, projected ones hollow with their
    range, each labelled, so a projection is never read as a measurement."""
    fig, axis = new_figure(size=(8, 5))
    for point in times.points:
        style = dict(fmt="o", color="tab:blue") if point.measured else dict(fmt="o", color="tab:orange", mfc="none")
        axis.errorbar(point.parameters, point.seconds, yerr=[[point.seconds - point.low], [point.high - point.seconds]],
                      capsize=3, **style)
        axis.annotate(f"{point.model}{'' if point.measured else ' (projected)'}", (point.parameters, point.seconds),
                      fontsize=7, xytext=(4, 4), textcoords="offset points")
    axis.errorbar([], [], fmt="o", color="tab:blue", label="measured on this machine")
    axis.errorbar([], [], fmt="o", color="tab:orange", mfc="none", label="projected from FLOPs (not measured)")
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set(xlabel="parameters", ylabel="seconds per epoch", title=times.recipe)
    axis.legend(fontsize=8, loc="upper left")
    return figure_png(fig)
