"""Tables for readers: probe text, per-epoch metrics, verdicts per seed, onsets per metric, memory plans, curves."""

from __future__ import annotations

import dataclasses
import html
from collections.abc import Iterable

from trainer.cache.record import Run, RunSummary
from trainer.stats.curve import InertiaCurve
from trainer.stats.metrics import MetricOnset
from trainer.stats.movement import RATE, STEPS, Estimate
from trainer.stats.verdict import EpochVerdict
from trainer.studies.training_time import TrainingTimes
from trainer.training.probe import text_probes


def probe_table_html(run: Run, epoch: int) -> str:
    """Baseline vs tuned, per held-out probe: margins, marker hits and the greedy answers."""
    base, tuned = run.baseline, run.evaluation(epoch)
    prompts = run.record.probes or [f"probe {i}" for i in range(len(base.margins))]
    if not tuned.has_text:  # generate=False: margins only
        tuned = dataclasses.replace(tuned, **text_probes([""] * len(prompts), (), base.generations))
    rows = "".join(
        f"<tr><td>{html.escape(p)}</td><td>{bm:+.3f}</td><td>{tm:+.3f}</td><td>{tm - bm:+.3f}</td>"
        f"<td>{html.escape(bg)}</td><td>{html.escape(tg)}</td><td>{'✔' if th else ''}</td>"
        f"<td>{'' if bg == tg else 'differs'}</td></tr>"
        for p, bm, tm, bg, tg, th in zip(prompts, base.margins, tuned.margins, base.generations,
                                         tuned.generations, tuned.marker_hits)
    )
    return (f"<html><head><meta charset='utf-8'><style>td,th{{border:1px solid #ccc;padding:3px;"
            f"font:12px sans-serif;vertical-align:top}}table{{border-collapse:collapse}}</style></head><body>"
            f"<p>{html.escape(run.model)} · {html.escape(run.behavior)} · epoch 0 vs epoch {epoch} · "
            f"{tuned.differ_from_baseline}/{len(prompts)} generations differ · marker rate "
            f"{base.marker_rate:.0%} → {tuned.marker_rate:.0%}</p><table><tr><th>probe</th>"
            f"<th>margin e0</th><th>margin e{epoch}</th><th>gain</th><th>answer e0</th><th>answer e{epoch}</th>"
            f"<th>marker</th><th></th></tr>{rows}</table></body></html>")


def epoch_table_csv(run: Run, verdicts: list[EpochVerdict]) -> str:
    by_epoch = {v.epoch: v for v in verdicts}
    lines = ["epoch,train_loss,mean_margin,gain,gain_ci_low,gain_ci_high,p_value,p_vs_control,control_gain,shifted,"
             "marker_rate,different,kl"]
    for row in RunSummary.of(run).rows:
        v = by_epoch.get(row["epoch"])
        cells = [row["epoch"], _fmt(row["loss"]), _fmt(row["mean_margin"]), _fmt(v and v.gain),
                 _fmt(v and v.gain_ci[0]), _fmt(v and v.gain_ci[1]), _fmt(v and v.p_value),
                 _fmt(v and v.p_vs_control), _fmt(v and v.control_gain),
                 "" if v is None else v.shifted, _fmt(row["marker_rate"]), row["different"] or "",
                 _fmt(row["kl_from_base"])]
        lines.append(",".join(str(c) for c in cells))
    return "\n".join(lines) + "\n"


def seed_verdicts_csv(decision) -> str:
    """One row per look and seed: what each replicate measured and how the majority came out."""
    lines = ["epoch,seed,gain,gain_ci_low,gain_ci_high,p_value,control_gain,p_vs_control,alpha_per_look,"
             "seed_shifted,majority_shifted"]
    for look in decision.verdicts:
        for run, v in zip(decision.runs, look.per_seed):
            cells = [look.epoch, run.seed, _fmt(v.gain), _fmt(v.gain_ci[0]), _fmt(v.gain_ci[1]),
                     _fmt(v.p_value), _fmt(v.control_gain), _fmt(v.p_vs_control), _fmt(v.alpha_per_look),
                     v.shifted, look.shifted]
            lines.append(",".join(str(c) for c in cells))
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    return "" if value is None else f"{value:.4g}"


def memory_plan_csv(plan) -> str:
    from trainer.memory.planner import PARTS

    rows = ["part,device_bytes,host_bytes"]
    rows += [f"{part},{plan.device_parts.get(part, 0)},{plan.host_parts.get(part, 0)}" for part in PARTS]
    return "\n".join(rows + [f"total,{plan.device_total},{plan.host_total}"])


def onset_table_csv(onsets: dict[str, MetricOnset]) -> str:
    epochs = [r.epoch for r in next(iter(onsets.values())).readings]
    lines = ["metric,onset," + ",".join(f"epoch {e}" for e in epochs)]
    for onset in onsets.values():
        cells = [f"{r.value:.4g}{'*' if r.shifted else ''}" for r in onset.readings]
        lines.append(f"{onset.label},{'' if onset.onset is None else onset.onset}," + ",".join(cells))
    return "\n".join(lines) + "\n(* = counts as shifted under that metric's rule)\n"


def curve_table_csv(curves: Iterable[InertiaCurve]) -> str:
    """One row per model: onset and its interval, then the rate and steps to the floor (mean, 95% interval,
    seeds that reached the floor)."""
    lines = ["model,parameters,lr,onset,onset_ci_low,onset_ci_high,by_epoch,seeds,rate,rate_ci_low,rate_ci_high,"
             "steps_to_floor,steps_ci_low,steps_ci_high,seeds_reaching_floor"]
    for curve in curves:
        for p in curve.points:
            cells = [p.model, p.parameters, p.lr, "" if p.onset is None else p.onset, p.interval[0], p.interval[1],
                     p.by_epoch, p.seeds]
            moved = p.movement
            for by in (RATE, STEPS):
                cells += _estimate_cells(moved.over_seeds(by) if moved else None)
            cells.append(sum(c is not None for c in moved.crossings) if moved else "")
            lines.append(",".join(str(c) for c in cells))
    return "\n".join(lines) + "\n"


def _estimate_cells(estimate: Estimate | None) -> list[str]:
    """Mean, low, high; empty cells where there is no estimate (no movement, or too few seeds reached the floor)."""
    return [f"{v:.6g}" for v in (estimate.mean, estimate.low, estimate.high)] if estimate else ["", "", ""]


def training_time_csv(times: TrainingTimes) -> str:
    lines = ["model,parameters,tokens_per_epoch,seconds_per_epoch,low,high,measured"]
    for p in times.points:
        lines.append(f"{p.model},{p.parameters},{p.tokens},{p.seconds:.3f},{p.low:.3f},{p.high:.3f},{p.measured}")
    return "\n".join(lines) + "\n"
