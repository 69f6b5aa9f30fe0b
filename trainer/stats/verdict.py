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
significant; only an effect floor keeps placebo-vs-placebo comparisons quiet (measured: see docs/decision-rule.md).

Over several seeds (replicate runs, see Experiment.seed) the experiment has shifted at e when a
majority of seeds has AND the seeds' gains exceed their controls' gains in a Welch t-test across
seeds (see SeedsVerdict): seeds, not probes, are the replications of training. The onset is the
first such evaluated epoch. Each epoch carries a 95% BCa
bootstrap interval of the gain; the onset carries a percentile interval from a hierarchical
bootstrap (seeds, then probes) that re-applies the whole rule to every resample.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from trainer.cache.record import Run


@dataclass(frozen=True)
class Thresholds:
    """Every number that decides a verdict; each is a `--ft-*` option (see fixtures/plugin.py)."""

    alpha: float = 0.01
    min_gain: float = 0.1  # nats/token of stance-margin gain over the baseline
    min_marker_gain: float = 0.1  # rise in the share of generations that contain a stance marker
    differ_share: float = 0.5  # the notebook's rule: this share of greedy answers differs from epoch 0
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
    return np.asarray(run.evaluation(epoch).margins) - np.asarray(run.baseline.margins)


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
    """One epoch over every seed.

    Shifted when (1) a majority of the seeds' own runs has shifted (the per-seed rule above) and
    (2) the seeds, as replications of training, agree: Welch's one-sided t-test of the seeds' gains
    against their controls' gains (or against 0 without controls) has p < alpha / looks, and the
    mean gain beyond the controls is at least `min_gain`. Part 2 is what keeps placebo-vs-placebo
    false alarms rare: a placebo seed whose margin drifted further than another's passes the
    probe-level tests, but not a test across seeds (measured; see trainer.studies.error_rates).
    """

    epoch: int
    per_seed: tuple[EpochVerdict, ...]
    p_across_seeds: float
    gain_beyond_controls: float
    alpha_per_look: float
    min_gain: float

    @property
    def shifted_seeds(self) -> int:
        return sum(v.shifted for v in self.per_seed)

    @property
    def majority(self) -> bool:
        return self.shifted_seeds * 2 > len(self.per_seed)

    @property
    def seeds_agree(self) -> bool:
        return self.p_across_seeds < self.alpha_per_look and self.gain_beyond_controls >= self.min_gain

    @property
    def shifted(self) -> bool:
        return self.majority and self.seeds_agree

    @property
    def short_of_agreement(self) -> bool:
        """A majority shifted on its own and the gain beyond the controls passes the floor, but the test across
        seeds missed alpha: not shifted for want of agreement (or of seeds), not for want of movement."""
        return self.majority and self.gain_beyond_controls >= self.min_gain and \
            not self.p_across_seeds < self.alpha_per_look

    def short_of_agreement_words(self) -> str:
        """The figures behind `short_of_agreement`, for the messages that name it."""
        return (f"{self.shifted_seeds}/{len(self.per_seed)} seeds shifted on their own and the gain beyond the "
                f"controls ({self.gain_beyond_controls:+.3f} nats/token) passes the {self.min_gain:g} floor, but the "
                f"test across seeds (p {self.p_across_seeds:.2g}) misses alpha / looks = {self.alpha_per_look:.2g}")

    @property
    def mean_gain(self) -> float:
        return float(np.mean([v.gain for v in self.per_seed]))


def judge_seeds(runs: list[Run], epoch: int, thresholds: Thresholds, looks: int,
                controls: list[Run] | None = None) -> SeedsVerdict:
    """Every seed at one epoch; `controls` default to each run's own null control (placebo tests pass others)."""
    controls = controls if controls is not None else [run.control for run in runs]
    per_seed = tuple(judge_epoch(run, epoch, thresholds, looks, control) for run, control in zip(runs, controls))
    gains = np.array([v.gain for v in per_seed])
    control_gains = np.array([v.control_gain for v in per_seed if v.control_gain is not None])
    p_across, beyond = seeds_test(gains[None, :], control_gains[None, :] if len(control_gains) else None)
    return SeedsVerdict(epoch, per_seed, float(p_across[0]), float(beyond[0]), thresholds.alpha / looks,
                        thresholds.min_gain)


def seeds_test(gains: np.ndarray, control_gains: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise Welch one-sided t-test of seed gains > control gains (or > 0 without controls), and the
    mean gain beyond the controls. Fewer than 2 seeds, or no spread at all, gives p = 1 unless every
    difference is positive and identical (then the seeds agree exactly: p = 0)."""
    reference = control_gains if control_gains is not None else np.zeros_like(gains)
    beyond = gains.mean(axis=1) - reference.mean(axis=1)
    if gains.shape[1] < 2:
        return np.where(beyond > 0, 0.0, 1.0), beyond
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # identical seeds: handled below as an exact agreement
        if control_gains is not None:
            p = stats.ttest_ind(gains, reference, axis=1, equal_var=False, alternative="greater").pvalue
        else:
            p = stats.ttest_1samp(gains, 0.0, axis=1, alternative="greater").pvalue
    p = np.where(np.isnan(p), np.where(beyond > 0, 0.0, 1.0), p)
    return p, beyond


def onset_interval(runs: list[Run], epochs: list[int], thresholds: Thresholds, looks: int,
                   resamples: int = 1000, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the onset epoch: resample seeds, then probes, and re-apply the whole
    rule (vectorised Wilcoxon, normal approximation because resampled probes tie). `inf` = no onset."""
    rng = np.random.default_rng(0)
    n_probes = len(runs[0].baseline.margins)
    picks = rng.integers(n_probes, size=(resamples, n_probes))
    seed_picks = rng.integers(len(runs), size=(resamples, len(runs)))
    rows = np.arange(resamples)[:, None]
    onsets = np.full(resamples, np.inf)
    for epoch in reversed(epochs):  # the last epoch written wins, so onsets end as the first shifted epoch
        per_run = [_resampled(run, epoch, picks, thresholds, looks) for run in runs]
        shifted = np.stack([r[0] for r in per_run])[seed_picks, rows]
        gains = np.stack([r[1] for r in per_run])[seed_picks, rows]
        control_gains = (np.stack([r[2] for r in per_run])[seed_picks, rows]
                         if all(r[2] is not None for r in per_run) else None)
        p_across, beyond = seeds_test(gains, control_gains)
        agree = (p_across < thresholds.alpha / looks) & (beyond >= thresholds.min_gain)
        onsets[(shifted.sum(axis=1) * 2 > len(runs)) & agree] = epoch
    low, high = np.quantile(onsets, [(1 - confidence) / 2, (1 + confidence) / 2], method="inverted_cdf")
    return float(low), float(high)


def _resampled(run: Run, epoch: int, picks: np.ndarray, thresholds: Thresholds,
               looks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Per probe-resample: the per-seed rule's verdict, the gain, and the control's gain."""
    alpha = thresholds.alpha / looks
    deltas = margin_deltas(run, epoch)[picks]
    gains = deltas.mean(axis=1)
    shifted = (_wilcoxon_rows(deltas) < alpha) & (gains >= thresholds.min_gain)
    if run.control is None:
        return shifted, gains, None
    control = margin_deltas(run.control, epoch)[picks]
    beyond = deltas - control
    shifted &= (_wilcoxon_rows(beyond) < alpha) & (beyond.mean(axis=1) >= thresholds.min_gain)
    return shifted, gains, control.mean(axis=1)


def _wilcoxon_rows(deltas: np.ndarray) -> np.ndarray:
    p_values = np.ones(len(deltas))
    moving = np.any(deltas != 0, axis=1)
    if moving.any():
        p_values[moving] = stats.wilcoxon(deltas[moving], axis=1, alternative="greater", method="approx",
                                          zero_method="zsplit").pvalue
    return p_values


# ---------------------------------------------------------------- the rule and its readings, in words

def describe_rule(thresholds: Thresholds, looks: int, seeds: int, with_control: bool) -> str:
    """The shift rule as this module applies it, with the thresholds it was applied with."""
    t = thresholds
    return (f"per seed: Wilcoxon p < {t.alpha}/{looks} looks, gain >= {t.min_gain} nats/token"
            + (", and beyond the null control by >= that much (paired p < the same alpha)" if with_control else "")
            + f"; the experiment shifts when a majority of its {seeds} seeds does and, across seeds, their gains "
              f"exceed their controls' (Welch p < the same alpha) by >= {t.min_gain}")


def verdict_words(v: EpochVerdict) -> str:
    control = ("" if v.p_vs_control is None
               else f", control gain {v.control_gain:+.3f} (p vs control {v.p_vs_control:.2g})")
    low, high = v.gain_ci
    return (f"gain {v.gain:+.3f} [95% CI {low:+.3f}, {high:+.3f}], p {v.p_value:.2g}, d_z {v.effect_size:.2f}"
            f"{control} -> {'shifted' if v.shifted else 'no shift'}")


def look_lines(look: SeedsVerdict, seeds: list[int]) -> list[str]:
    """One look over every seed: the across-seed test, then each seed's own reading."""
    lines = [f"  epoch {look.epoch:>3}: {look.shifted_seeds}/{len(look.per_seed)} seeds shifted; across seeds gain "
             f"beyond controls {look.gain_beyond_controls:+.3f}, p {look.p_across_seeds:.2g} -> "
             f"{'SHIFTED' if look.shifted else 'no shift'}"]
    return lines + [f"    seed {seed}: {verdict_words(v)}" for seed, v in zip(seeds, look.per_seed)]


def epoch_words(epoch: float) -> str:
    return "not by the last epoch judged" if epoch == float("inf") else f"epoch {epoch:g}"

