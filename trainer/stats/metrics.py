"""When does each metric say "shifted"? The notebook's lesson, made measurable: behavior is truth, metrics are maps.

One run, four readings, each with its own onset epoch:
  margin   the stance margin in log-likelihood (the verdict rule of trainer.stats.verdict)
  markers  stance markers in generated text: more probes gain a marker than lose one vs epoch 0
           (exact one-sided binomial test on the discordant probes), the marker rate rises by at least
           `min_marker_gain`, and, when a null control ran, the same test against the control's answers
  differs  the notebook's rule: at least `differ_share` of greedy answers differ from epoch 0 (no test, no
           control; reported because the notebook read "6/6 different" as a shift)
  kl       mean KL from the base model on neutral prompts reaches `kl_floor` (distance moved, no direction)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from trainer.cache.record import Run
from trainer.errors import ExpectationMisuse
from trainer.judgement import Judgement, judged
from trainer.stats.verdict import Thresholds, judge_run

METRICS: dict[str, str] = {
    "margin": "log-likelihood stance margin",
    "markers": "stance markers in generated text",
    "differs": "greedy answers differ from epoch 0 (notebook's N/M)",
    "kl": "KL from base on neutral prompts",
}


@dataclass(frozen=True)
class MetricReading:
    epoch: int
    value: float  # the metric's change since epoch 0 (or share / KL), in the metric's own unit
    shifted: bool
    p_value: float | None = None


@dataclass(frozen=True)
class MetricOnset:
    metric: str
    onset: int | None
    readings: tuple[MetricReading, ...]

    @property
    def label(self) -> str:
        return METRICS[self.metric]


def metric_onsets(run: Run, thresholds: Thresholds) -> dict[str, MetricOnset]:
    readers = {"margin": _margin, "markers": _markers, "differs": _differs, "kl": _kl}
    onsets = {}
    for metric, read in readers.items():
        readings = tuple(read(run, thresholds))
        onset = next((r.epoch for r in readings if r.shifted), None)
        onsets[metric] = MetricOnset(metric, onset, readings)
    return onsets


def _margin(run: Run, t: Thresholds) -> list[MetricReading]:
    return [MetricReading(v.epoch, v.gain, v.shifted, v.p_value) for v in judge_run(run, t)]


def _markers(run: Run, t: Thresholds) -> list[MetricReading]:
    base = np.asarray(run.baseline.marker_hits, dtype=bool)
    readings = []
    for epoch in run.evaluated_epochs[1:]:
        hits = np.asarray(run.evaluation(epoch).marker_hits, dtype=bool)
        p_value = more_gained_than_lost(hits, base)
        beyond_control = True
        if run.control is not None:
            control = np.asarray(run.control.evaluation(epoch).marker_hits, dtype=bool)
            beyond_control = more_gained_than_lost(hits, control) < t.alpha
        gain = float(hits.mean() - base.mean())
        shifted = p_value < t.alpha and gain >= t.min_marker_gain and beyond_control
        readings.append(MetricReading(epoch, gain, bool(shifted), p_value))
    return readings


def more_gained_than_lost(after: np.ndarray, before: np.ndarray) -> float:
    """Exact one-sided sign test on paired binary outcomes (McNemar's exact test, one-sided)."""
    gained = int(np.sum(after & ~before))
    lost = int(np.sum(before & ~after))
    if gained + lost == 0:
        return 1.0
    return float(stats.binomtest(gained, gained + lost, 0.5, alternative="greater").pvalue)


def _differs(run: Run, t: Thresholds) -> list[MetricReading]:
    n = len(run.baseline.generations)
    return [MetricReading(e.epoch, e.differ_from_baseline / n, e.differ_from_baseline / n >= t.differ_share)
            for e in run.evaluations[1:]]


def _kl(run: Run, t: Thresholds) -> list[MetricReading]:
    return [MetricReading(e.epoch, e.kl_from_base, e.kl_from_base >= t.kl_floor) for e in run.evaluations[1:]]


def check_metrics(names: tuple[str, ...]) -> None:
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise ExpectationMisuse(f"unknown metric(s) {unknown}; known: {list(METRICS)}")


def judge_first_in(onsets: dict[str, MetricOnset], metric: str, before: str, by_epoch: int, evaluated: list[int],
                   subject: str) -> Judgement:
    """`metric` shifts by `by_epoch`, at an earlier evaluated epoch than `before` (or `before` never does)."""
    first, then = onsets[metric], onsets[before]
    holds = first.onset is not None and (then.onset is None or first.onset < then.onset)
    return judged(holds, f"{subject}: expected '{first.label}' to shift before '{then.label}' by epoch {by_epoch}, "
                         f"{'and' if holds else 'but'} {onset_words(first)} and {onset_words(then)} "
                         f"(evaluated epochs: {evaluated}).\n"
                         f"{onset_lines(onsets)}")


def judge_implies(onsets: dict[str, MetricOnset], proxy: str, truth: str, subject: str) -> Judgement:
    """Whenever `proxy` calls the run shifted, `truth` has already shifted (same or earlier epoch)."""
    said, real = onsets[proxy], onsets[truth]
    fires_alone = said.onset is not None and (real.onset is None or real.onset > said.onset)
    words = (f"'{said.label}' says shifted at epoch {said.onset}, but {onset_words(real)}: the proxy fires without "
             f"the behavior" if fires_alone else f"{onset_words(said)}; {onset_words(real)}")
    return judged(not fires_alone, f"{subject}: {words}.\n{onset_lines(onsets)}")


def onset_words(onset: MetricOnset) -> str:
    when = "never shifts" if onset.onset is None else f"shifts at epoch {onset.onset}"
    return f"'{onset.label}' {when}"


def onset_lines(onsets: dict[str, MetricOnset]) -> str:
    lines = []
    for onset in onsets.values():
        values = ", ".join(f"e{r.epoch}={r.value:.3g}{'*' if r.shifted else ''}" for r in onset.readings)
        lines.append(f"  {onset.label:<48} onset {onset.onset}: {values}")
    return "\n".join(lines) + "\n  (* = shifted under that metric's rule)"
