"""Verdict rules on hand-built records: each rule fires when, and only when, its conditions hold."""

import dataclasses

import numpy as np
import pytest

from trainer.cache.record import BehaviorInfo, Evaluation, MethodInfo, ModelInfo, Run, RunRecord
from trainer.errors import ConfigError
from trainer.stats.metrics import metric_onsets, more_gained_than_lost
from trainer.stats.verdict import Thresholds, bootstrap_ci, judge_epoch

N = 40
RNG = np.random.default_rng(0)
BASE = RNG.normal(0.0, 0.3, N)


def evaluation(epoch, gain=0.0, noise=0.05, hits=0, differ=0, kl=0.0):
    margins = BASE + gain + (RNG.normal(0, noise, N) if epoch else 0)
    marker_hits = [i < hits for i in range(N)]
    return Evaluation(epoch, margins.tolist(), float(margins.mean()), kl, True, ["x"] * N, marker_hits, hits / N,
                      differ)


def make_run(*evaluations, control=None):
    record = RunRecord("k", {}, {"data": "train", "lr": 1e-5, "seed": 0, "method": {"kind": "full"}},
                       ModelInfo("synthetic", 0, None, "", "plain"), BehaviorInfo("b", 1, ""), MethodInfo(0, [], 0),
                       [], evaluations=[evaluation(0), *evaluations])
    return Run(record, through_epoch=record.evaluations[-1].epoch, control=control)


def test_no_change_is_no_shift():
    verdict = judge_epoch(make_run(evaluation(2, gain=0.0, noise=0.0)), 2, Thresholds())
    assert not verdict.shifted and verdict.p_value == 1.0


def test_consistent_gain_above_the_floor_is_a_shift():
    verdict = judge_epoch(make_run(evaluation(2, gain=0.5)), 2, Thresholds())
    assert verdict.shifted and verdict.p_value < 1e-6 and verdict.gain == pytest.approx(0.5, abs=0.05)


def test_significant_but_tiny_gain_is_not_a_shift():
    verdict = judge_epoch(make_run(evaluation(2, gain=0.05, noise=0.01)), 2, Thresholds(min_gain=0.1))
    assert verdict.p_value < 0.01 and not verdict.shifted


def test_a_gain_the_control_shows_too_is_not_a_shift():
    control = make_run(evaluation(2, gain=0.5))
    verdict = judge_epoch(make_run(evaluation(2, gain=0.5), control=control), 2, Thresholds())
    assert verdict.p_value < 0.01 and verdict.p_vs_control > 0.01 and not verdict.shifted


def test_decreasing_margin_is_not_a_shift():
    assert not judge_epoch(make_run(evaluation(2, gain=-0.5)), 2, Thresholds()).shifted


def test_marker_rule_needs_more_probes_gaining_than_losing():
    run = make_run(evaluation(2, gain=0.5, hits=2), evaluation(4, gain=0.6, hits=12))
    markers = metric_onsets(run, Thresholds())["markers"]
    assert [r.shifted for r in markers.readings] == [False, True] and markers.onset == 4
    assert more_gained_than_lost(np.array([True] * 3), np.array([False] * 3)) == pytest.approx(1 / 8)


def test_seed_rule_and_kl_fire_on_their_thresholds_only():
    run = make_run(evaluation(2, differ=10, kl=0.001), evaluation(4, differ=30, kl=0.02))
    onsets = metric_onsets(run, Thresholds(differ_share=0.5, kl_floor=0.01))
    assert onsets["differs"].onset == 4 and onsets["kl"].onset == 4
    assert onsets["margin"].onset is None and onsets["markers"].onset is None


@pytest.mark.parametrize("bad", [dict(alpha=0), dict(alpha=1.5), dict(min_gain=-1), dict(differ_share=2),
                                 dict(min_marker_gain=-0.1), dict(kl_floor=-1)])
def test_bad_thresholds_are_named(bad):
    with pytest.raises(ConfigError, match=next(iter(bad))):
        Thresholds(**bad)


def test_bootstrap_interval_brackets_the_gain_and_is_reproducible():
    verdict = judge_epoch(make_run(evaluation(2, gain=0.5, noise=0.2)), 2, Thresholds())
    low, high = verdict.gain_ci
    assert low < verdict.gain < high and high - low < 0.3
    deltas = np.linspace(-1, 2, N)
    assert bootstrap_ci(deltas) == bootstrap_ci(deltas)
    assert bootstrap_ci(np.zeros(N)) == (0.0, 0.0)


def test_a_gain_no_larger_than_the_controls_is_no_shift_even_when_consistent():
    control = make_run(evaluation(2, gain=0.45, noise=0.01))
    verdict = judge_epoch(make_run(evaluation(2, gain=0.5, noise=0.01), control=control), 2, Thresholds())
    assert verdict.p_vs_control < 1e-6, "the paired test alone would call this a shift"
    assert not verdict.shifted, "gain beyond the control (0.05) is below the 0.1 floor"


def test_each_look_is_tested_at_alpha_over_the_number_of_looks():
    deltas = np.array([0.6 + 0.001 * i for i in range(21)] + [-0.4 - 0.001 * i for i in range(19)])
    weak = make_run(dataclasses.replace(evaluation(2), margins=(BASE + deltas).tolist()))  # mean +0.125, p = 0.0013
    single = judge_epoch(weak, 2, Thresholds(alpha=0.01), looks=1)
    corrected = judge_epoch(weak, 2, Thresholds(alpha=0.01), looks=10)
    assert 0.001 < single.p_value < 0.01 and corrected.p_value == single.p_value
    assert single.shifted and single.alpha_per_look == 0.01
    assert not corrected.shifted and corrected.alpha_per_look == 0.001


def test_a_majority_of_seeds_decides():
    from trainer.stats.verdict import judge_seeds

    shifted, flat = make_run(evaluation(2, gain=0.5)), make_run(evaluation(2, gain=0.0, noise=0.0))
    assert judge_seeds([shifted, shifted, shifted], 2, Thresholds(), looks=1).shifted
    assert judge_seeds([shifted, shifted, flat], 2, Thresholds(), looks=1).majority
    assert not judge_seeds([shifted, flat, flat], 2, Thresholds(), looks=1).shifted
    assert not judge_seeds([shifted, flat], 2, Thresholds(), looks=1).majority, "a tie is not a majority"


def test_onset_interval_brackets_a_clear_onset_and_is_open_without_one():
    from trainer.stats.verdict import onset_interval

    runs = [make_run(evaluation(1, gain=0.0, noise=0.0), evaluation(2, gain=0.6), evaluation(3, gain=0.9))
            for _ in range(3)]
    assert onset_interval(runs, [1, 2, 3], Thresholds(), looks=3) == (2.0, 2.0)
    flat = [make_run(evaluation(1, gain=0.0, noise=0.0)) for _ in range(3)]
    assert onset_interval(flat, [1], Thresholds(), looks=1) == (float("inf"), float("inf"))


def test_placebo_pairs_that_differ_only_a_little_are_not_false_alarms_but_real_gaps_are():
    from trainer.stats.error_rates import pairwise_false_positive_rate

    nulls = [make_run(evaluation(2, gain=g, noise=0.02)) for g in (0.30, 0.33, 0.36)]
    quiet = pairwise_false_positive_rate(nulls, [2], Thresholds())
    assert quiet.trials == 6 and quiet.hits == 0, "placebo gaps of 0.03-0.06 nats are below the 0.1 floor"
    unfloored = pairwise_false_positive_rate(nulls, [2], Thresholds(), floor_beyond_control=False)
    assert unfloored.hits == 3, "without the floor, each pair alarms in the direction of its larger placebo"
    gapped = [make_run(evaluation(2, gain=g, noise=0.02)) for g in (0.0, 0.5)]
    assert pairwise_false_positive_rate(gapped, [2], Thresholds()).hits == 1, "a 0.5 gap fires in one direction"


def test_one_drifting_placebo_seed_alarms_alone_but_not_across_seeds():
    from trainer.stats.error_rates import false_positive_rate, pairwise_false_positive_rate, placebo_experiments

    gains = (0.0, 0.02, 0.04, 0.06, 0.30, 0.33)  # two placebo seeds drifted far, as SmolLM2's did by epoch 10
    nulls = [make_run(evaluation(2, gain=g, noise=0.02)) for g in gains]
    assert len(placebo_experiments(nulls, 3)) == 20
    assert pairwise_false_positive_rate(nulls, [2], Thresholds()).hits > 0
    assert false_positive_rate(nulls, [2], Thresholds(), seeds=3).hits == 0


def test_seeds_that_agree_shift_and_a_lone_outlier_does_not():
    from trainer.stats.verdict import judge_seeds

    controls = [make_run(evaluation(2, gain=g, noise=0.02)) for g in (-0.10, -0.12, -0.14)]
    treated = [make_run(evaluation(2, gain=g, noise=0.02), control=c) for g, c in zip((0.30, 0.33, 0.28), controls)]
    verdict = judge_seeds(treated, 2, Thresholds(), looks=5)
    assert verdict.shifted and verdict.p_across_seeds < 0.002 and verdict.gain_beyond_controls > 0.4
    spread = [make_run(evaluation(2, gain=g, noise=0.02), control=c) for g, c in zip((0.9, 0.2, 0.2), controls)]
    verdict = judge_seeds(spread, 2, Thresholds(), looks=5)
    assert verdict.majority and not verdict.seeds_agree, "three seeds too spread out to be sure at 0.01/5"


def test_inertia_fits_prefer_the_form_that_generated_the_onsets():
    from trainer.stats.curve import InertiaCurve, OnsetPoint

    def curve(onset_of):
        sizes = [1e8, 2e8, 4e8, 8e8, 1.6e9, 3.2e9]
        return InertiaCurve(tuple(OnsetPoint(f"m{i}", int(n), 1e-5, onset_of(n), (0, 0), 20, 3)
                                  for i, n in enumerate(sizes)), ())

    log_curve = curve(lambda n: round(2 * np.log10(n / 1e8)) + 1)
    fits = log_curve.fits()
    assert fits["log-linear"].aic + 2 <= fits["linear"].aic and fits["log-linear"].slope > 0
    rho, p = log_curve.spearman()
    assert rho > 0.9 and p < 0.01
    linear_curve = curve(lambda n: round(n / 2e8) + 1)
    fits = linear_curve.fits()
    assert fits["linear"].aic + 2 <= fits["log-linear"].aic
    flat = curve(lambda n: 2)
    assert np.isnan(flat.spearman()[0]), "all onsets tied: no correlation to report"
    censored = curve(lambda n: None)
    assert censored.fits() is None and censored.observed == []
