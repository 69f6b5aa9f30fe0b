"""Did the behavior shift? A paired test over held-out probes, an effect-size floor, and a null control.

At epoch e, for each probe i: delta_i = margin_i(e) - margin_i(0). The behavior has shifted at e when
  1. a one-sided Wilcoxon signed-rank test says the deltas are > 0 (p < alpha),
  2. the mean delta (gain, nats per token) is at least `min_gain`, and
  3. when a null control ran, the deltas exceed the control's deltas at the same epoch (paired, p < alpha).
The onset epoch is the first evaluated epoch after the baseline where all three hold. Each epoch
also carries a 95% bootstrap interval of the gain (reported, not used in the decision).
(Correction for testing many epochs and statistics over seeds are the inertia issue's work.)
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


def judge_epoch(run: Run, epoch: int, thresholds: Thresholds) -> EpochVerdict:
    deltas = margin_deltas(run, epoch)
    p_value = one_sided_wilcoxon(deltas)
    gain = float(deltas.mean())
    spread = float(deltas.std(ddof=1)) if len(deltas) > 1 else 0.0
    effect = gain / spread if spread > 0 else 0.0
    control_gain = p_control = None
    beyond_control = True
    if run.control is not None:
        control_deltas = margin_deltas(run.control, epoch)
        control_gain = float(control_deltas.mean())
        p_control = one_sided_wilcoxon(deltas - control_deltas)
        beyond_control = p_control < thresholds.alpha
    shifted = p_value < thresholds.alpha and gain >= thresholds.min_gain and beyond_control
    return EpochVerdict(epoch, bool(shifted), gain, effect, p_value, control_gain, p_control, len(deltas),
                        bootstrap_ci(deltas))


def judge_run(run: Run, thresholds: Thresholds) -> list[EpochVerdict]:
    return [judge_epoch(run, epoch, thresholds) for epoch in run.evaluated_epochs[1:]]


def onset_epoch(verdicts: list[EpochVerdict]) -> int | None:
    return next((v.epoch for v in verdicts if v.shifted), None)
