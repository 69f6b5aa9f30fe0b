"""Did the behavior shift? A paired test over held-out probes, an effect-size floor, and a null control.

At epoch e, for each probe i: delta_i = margin_i(e) - margin_i(0). One seed's run has shifted at e when
  1. a one-sided Wilcoxon signed-rank test says the deltas are > 0 (p < alpha / looks),
  2. the mean delta (gain, nats per token) is at least `min_gain`, and
  3. when a null control ran, the deltas exceed the control's at the same epoch (paired Wilcoxon,
     p < alpha / looks) AND the gain beyond the control is itself at least `min_gain`.
`looks` is the number of evaluated epochs the question may inspect (Bonferroni): stopping at the
first significant look then keeps the chance of any false alarm over all looks below alpha.
Condition 3's effect floor is there because probes are not independent replications of a run:
two placebo runs differ on most probes by a little, which a paired test over 44 probes calls
significant; only an effect floor keeps placebo-vs-placebo comparisons quiet (measured: see README).

Over several seeds (replicate runs, see Experiment.seed) the experiment has shifted at e when a
majority of seeds has. The onset is the first such evaluated epoch. Each epoch carries a 95% BCa
bootstrap interval of the gain; the onset carries a percentile interval from a hierarchical
bootstrap (seeds, then probes) that re-applies the whole rule to every resample.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from trainer.record import Run


@dataclass(frozen=True)
class Thresholds:
    """Every number that decides a verdict; each is a `--ft-*` option (see fixtures/plugin.py)."""

    alpha: float = 0.01
    min_gain: float = 0.1  # nats/token of stance-margin gain over the baseline
    min_marker_gain: float = 0.1  # rise in the share of generations that contain a stance marker
    differ_share: float = 0.5  # the seed's rule: this share of greedy answers differs from epoch 0
    kl_floor: float = 0.01  # nats: mean KL from the base model on neutral prompts

    def __post_init__(self) -> None:
        from trainer.errors import ConfigError

        problems = []
        if not 0 < self.alpha < 1:
            problems.append(f"alpha={self.alpha!r}: must be in (0, 1), e.g. 0.01")
        if self.min_gain < 0:
            problems.append(f"min_gain={self.min_gain!r}: must be >= 0 nats/token, e.g. 0.1")
        for name in ("min_marker_gain", "differ_share"):
            if not 0 <= getattr(self, name) <= 1:
                problems.append(f"{name}={getattr(self, name)!r}: must be a share in [0, 1]")
        if self.kl_floor < 0:
            problems.append(f"kl_floor={self.kl_floor!r}: must be >= 0 nats, e.g. 0.01")
        if problems:
            raise ConfigError("verdict thresholds", problems)


@dataclass(frozen=True)
class EpochVerdict:
    epoch: int
    shifted: bool
    gain: float  # mean margin change vs baseline, nats/token
    effect_size: float  # Cohen's d_z of the paired deltas
    p_value: float
    control_gain: float | None
    p_vs_control: float | None
    n_probes: int
    gain_ci: tuple[float, float] = (float("nan"), float("nan"))  # 95% bootstrap interval of the gain
    alpha_per_look: float = float("nan")

    def as_dict(self) -> dict:
        return asdict(self)


def one_sided_wilcoxon(deltas: np.ndarray) -> float:
    """p-value for 'deltas are shifted above 0'; 1.0 when there is no change at all."""
    if not np.any(deltas != 0):
        return 1.0
    return float(stats.wilcoxon(deltas, alternative="greater").pvalue)


def bootstrap_ci(deltas: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """BCa bootstrap interval of the mean change over probes; seeded, so a report reads the same twice."""
    if len(deltas) < 2 or np.ptp(deltas) == 0:
        return float(deltas.mean()), float(deltas.mean())
    result = stats.bootstrap((deltas,), np.mean, n_resamples=2000, confidence_level=confidence,
                             method="BCa", rng=np.random.default_rng(0))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def margin_deltas(run: Run, epoch: int) -> np.ndarray:
    return np.asarray(run.evaluation(epoch)["margins"]) - np.asarray(run.baseline["margins"])


def judge_epoch(run: Run, epoch: int, thresholds: Thresholds, looks: int = 1,
                control: Run | None = None) -> EpochVerdict:
    """One seed at one epoch; `control` defaults to the run's own null control (if it has one)."""
    control = control if control is not None else run.control
    alpha = thresholds.alpha / looks
    deltas = margin_deltas(run, epoch)
    p_value = one_sided_wilcoxon(deltas)
    gain = float(deltas.mean())
    spread = float(deltas.std(ddof=1)) if len(deltas) > 1 else 0.0
    effect = gain / spread if spread > 0 else 0.0
    control_gain = p_control = None
    beyond_control = True
    if control is not None:
        control_deltas = margin_deltas(control, epoch)
        control_gain = float(control_deltas.mean())
        p_control = one_sided_wilcoxon(deltas - control_deltas)
        beyond_control = p_control < alpha and gain - control_gain >= thresholds.min_gain
    shifted = p_value < alpha and gain >= thresholds.min_gain and beyond_control
    return EpochVerdict(epoch, bool(shifted), gain, effect, p_value, control_gain, p_control, len(deltas),
                        bootstrap_ci(deltas), alpha)


def judge_run(run: Run, thresholds: Thresholds, looks: int | None = None) -> list[EpochVerdict]:
    """Every evaluated epoch of one run; `looks` defaults to all of them (the Bonferroni count)."""
    epochs = run.evaluated_epochs[1:]
    return [judge_epoch(run, epoch, thresholds, looks or len(epochs)) for epoch in epochs]


def onset_epoch(verdicts: list) -> int | None:
    return next((v.epoch for v in verdicts if v.shifted), None)


@dataclass(frozen=True)
class SeedsVerdict:
    """One epoch over every seed: shifted when a majority of the seeds' runs has."""

    epoch: int
    per_seed: tuple[EpochVerdict, ...]

    @property
    def shifted_seeds(self) -> int:
        return sum(v.shifted for v in self.per_seed)

    @property
    def shifted(self) -> bool:
        return self.shifted_seeds * 2 > len(self.per_seed)

    @property
    def mean_gain(self) -> float:
        return float(np.mean([v.gain for v in self.per_seed]))


def judge_seeds(runs: list[Run], epoch: int, thresholds: Thresholds, looks: int) -> SeedsVerdict:
    return SeedsVerdict(epoch, tuple(judge_epoch(run, epoch, thresholds, looks) for run in runs))


def onset_interval(runs: list[Run], epochs: list[int], thresholds: Thresholds, looks: int,
                   resamples: int = 1000, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the onset epoch: resample seeds, then probes, and re-apply the whole
    rule (vectorised Wilcoxon, normal approximation because resampled probes tie). `inf` = no onset."""
    rng = np.random.default_rng(0)
    n_probes = len(runs[0].baseline["margins"])
    picks = rng.integers(n_probes, size=(resamples, n_probes))
    seed_picks = rng.integers(len(runs), size=(resamples, len(runs)))
    onsets = np.full(resamples, np.inf)
    for epoch in reversed(epochs):  # the last epoch written wins, so onsets end as the first shifted epoch
        shifted = np.stack([_shifted_resampled(run, epoch, picks, thresholds, looks) for run in runs])
        majority = shifted[seed_picks, np.arange(resamples)[:, None]].sum(axis=1) * 2 > len(runs)
        onsets[majority] = epoch
    low, high = np.quantile(onsets, [(1 - confidence) / 2, (1 + confidence) / 2], method="inverted_cdf")
    return float(low), float(high)


def _shifted_resampled(run: Run, epoch: int, picks: np.ndarray, thresholds: Thresholds, looks: int) -> np.ndarray:
    alpha = thresholds.alpha / looks
    deltas = margin_deltas(run, epoch)[picks]
    gains = deltas.mean(axis=1)
    shifted = (_wilcoxon_rows(deltas) < alpha) & (gains >= thresholds.min_gain)
    if run.control is not None:
        beyond = deltas - margin_deltas(run.control, epoch)[picks]
        shifted &= (_wilcoxon_rows(beyond) < alpha) & (beyond.mean(axis=1) >= thresholds.min_gain)
    return shifted


def _wilcoxon_rows(deltas: np.ndarray) -> np.ndarray:
    p_values = np.ones(len(deltas))
    moving = np.any(deltas != 0, axis=1)
    if moving.any():
        p_values[moving] = stats.wilcoxon(deltas[moving], axis=1, alternative="greater", method="approx",
                                          zero_method="zsplit").pvalue
    return p_values
