"""The inertia curve read three ways (onset, rate, steps to the floor), its permutation p, and the rate's resolution
(issue 19), on arithmetic and tiny runs."""

import numpy as np
import pytest
from scipy import stats
from tiny import TINY as TINY_MODEL_RUN

from trainer import Experiment
from trainer.errors import ExpectationMisuse
from trainer.ledger import figures
from trainer.report.plots import movement_plot_png
from trainer.report.tables import curve_table_csv
from trainer.stats.curve import InertiaCurve, OnsetPoint, rank_correlation
from trainer.stats.error_rates import resolution_false_positive_rate, resolution_power, splits, tells_apart
from trainer.stats.movement import Movement
from trainer.stats.verdict import Thresholds
from trainer.studies.error_rates import measure_rate_resolution

SIZES = (1e8, 2e8, 4e8, 8e8)


def curve(rates_of, crossings_of=lambda n: (2.0, 2.5, 3.0), onset_of=lambda n: 1) -> InertiaCurve:
    """A curve over SIZES whose points move at `rates_of(size)` per seed and reach the floor at `crossings_of`."""
    return InertiaCurve(tuple(
        OnsetPoint(f"m{i}", int(n), 1e-6, onset_of(n), (1, 1), 6, 3,
                   Movement(tuple(rates_of(n)), tuple(crossings_of(n)), 0.1, 1))
        for i, n in enumerate(SIZES)), ())


def test_the_rank_correlation_p_is_exact_for_a_short_curve_where_the_t_approximation_is_liberal():
    rho, p = rank_correlation(np.array(SIZES), np.array([1.0, 2.0, 3.0, 4.0]), "greater")
    assert rho == pytest.approx(1.0) and p == pytest.approx(1 / 24), "4 points: 24 orderings, one as extreme"
    sizes, values = np.repeat([1.0, 2.0], 3), np.arange(6.0)
    rho, p = rank_correlation(sizes, values, "greater")
    assert p == pytest.approx(0.05), "3 seeds against 3: 1 of 20 splits is as extreme"
    assert stats.spearmanr(sizes, values, alternative="greater").pvalue < 0.02, "the t approximation it replaces"
    assert rank_correlation(sizes, values[::-1], "less")[1] == pytest.approx(0.05)


def test_a_rank_correlation_it_cannot_compute_is_nan_not_a_p_of_0():
    for values in ([1.0, np.nan, 3.0, 4.0], [2.0, 2.0, 2.0, 2.0], [1.0, 2.0]):
        assert all(np.isnan(rank_correlation(np.array(SIZES[: len(values)]), np.array(values), "greater")))


def test_a_reading_too_short_to_reach_alpha_says_it_cannot_decide():
    three = InertiaCurve(tuple(OnsetPoint(f"m{i}", int(n), 1e-6, i + 1, (1, 1), 6, 3) for i, n in
                               enumerate(SIZES[:3])), ())
    judgement = three.judge_slower_with_size(0.05, by="onset")
    assert not judgement.holds, "3 onsets in order: the exact p is 1/6"
    assert "no ordering reaches p < 0.05 (the smallest is 0.167), so this reading cannot decide" in \
        judgement.explanation
    assert "cannot decide" not in curve(lambda n: (0.3, 0.2, 0.1)).judge_slower_with_size(0.05, by="rate").explanation


def test_the_rate_falls_and_the_steps_grow_when_larger_models_are_slower():
    slower = curve(lambda n: 0.1 / np.log10(n) + np.array([0.0, 0.0001, 0.0002]),
                   lambda n: np.log10(n) + np.array([0.0, 0.1, 0.2]))
    assert slower.judge_slower_with_size(0.05, by="rate").holds
    assert slower.judge_slower_with_size(0.05, by="steps").holds
    assert slower.reading("rate").values.size == 12 and not slower.judge_slower_with_size(0.05, by="onset").holds
    faster = curve(lambda n: np.log10(n) + np.array([0.0, 0.01, 0.02]))
    judgement = faster.judge_slower_with_size(0.05, by="rate")
    assert not judgement.holds and "rate does not fall with size" in judgement.explanation


def test_seeds_that_never_reach_the_floor_are_left_out_of_the_steps_and_counted():
    censored = curve(lambda n: (0.1, 0.1, 0.1), lambda n: (2.0, None, 3.0) if n > 1e8 else (1.0, 1.5, 2.0))
    reading = censored.reading("steps")
    assert reading.values.size == 9 and reading.left_out == 3
    assert "3 censored left out" in censored.judge_slower_with_size(0.05, by="steps").explanation


def test_a_reading_the_curve_does_not_have_is_a_misuse():
    with pytest.raises(ExpectationMisuse, match="onset, rate, steps"):
        curve(lambda n: (0.1, 0.2, 0.3)).reading("speed")


def test_log_linear_steps_win_when_the_steps_grow_with_the_log_of_size():
    log_steps = curve(lambda n: (0.1, 0.1, 0.1), lambda n: 2 * np.log10(n / 1e8) + 1 + np.array([0.0, 0.01, 0.02]))
    assert log_steps.judge_log_linear_fits_better(by="steps").holds
    assert not log_steps.judge_log_linear_fits_better(by="rate").holds, "a flat rate has no slope toward slower"


def test_the_ledger_keeps_each_reading_s_figures_with_their_rules():
    moving = curve(lambda n: (0.1, 0.2, 0.3), lambda n: (None, None, 4.0))
    rate = figures.of_curve(moving, "rate")
    assert rate["m0 rate at lr 1e-06"]["rule"] == figures.INTERVAL
    assert rate["m0 rate at lr 1e-06"]["low"] < 0.2 < rate["m0 rate at lr 1e-06"]["high"]
    assert rate["m0 rate at lr 1e-06, seeds"]["value"] == [0.1, 0.2, 0.3]
    steps = figures.of_curve(moving, "steps")
    assert steps["m0 steps to the floor at lr 1e-06"] == figures.exact(None, "steps"), "censored: no figure to move"
    assert list(figures.of_curve(moving, "onset"))[0] == "m0 onset epoch at lr 1e-06", "onset names kept"


def test_the_evidence_draws_and_tabulates_both_continuous_readings():
    moving = curve(lambda n: (0.1, 0.2, 0.3), lambda n: (1.0, None, 4.0))
    assert movement_plot_png(moving, "title").startswith(b"\x89PNG")
    table = curve_table_csv([moving]).splitlines()
    assert table[0].endswith("rate,rate_ci_low,rate_ci_high,steps_to_floor,steps_ci_low,steps_ci_high,"
                             "seeds_reaching_floor")
    assert table[1].split(",")[8] == "0.2" and table[1].endswith(",2")


def test_resolution_counts_each_split_once_and_tells_apart_only_what_differs():
    assert len(splits([1, 2, 3, 4, 5, 6], 3)) == 10
    assert not tells_apart([1.0, 1.0], [1.0, 1.0], 0.05) and tells_apart([1.0, 1.0], [2.0, 2.0], 0.05)
    noise = [0.10, 0.12, 0.09, 0.11, 0.10, 0.13]
    assert resolution_false_positive_rate([noise], 3, 0.05).trials == 10
    far = [v + 1.0 for v in noise]
    power = resolution_power(noise, far, 3, 0.05)
    assert power.trials == 400 and power.hits == 400
    assert resolution_power(noise, noise, 3, 0.05).value < 0.2


def test_the_rate_s_resolution_is_measured_on_replicate_runs_to_the_first_look():
    tiny = {**TINY_MODEL_RUN, "eval_every": 1, "epochs": 3}
    resolution = measure_rate_resolution(Experiment(**tiny), Experiment(**{**tiny, "model": "tiny-qwen2"}),
                                         replicates=4, thresholds=Thresholds(), seeds=2, progress=False)
    assert {model: len(r) for model, r in resolution.rates.items()} == {"tiny-llama": 4, "tiny-qwen2": 4}
    assert resolution.false_positive.trials == 2 * 3 and resolution.power.trials == 36 and resolution.look == 1
    assert "the two models (power)" in "\n".join(resolution.lines())
    with pytest.raises(ValueError, match="under one recipe"):
        measure_rate_resolution(Experiment(**tiny), Experiment(**{**tiny, "lr": 1e-4}), 4, Thresholds(), 2)
    qwen = Experiment(**{**tiny, "model": "tiny-qwen2"})
    with pytest.raises(ValueError, match="replicates >= 4"):
        measure_rate_resolution(Experiment(**tiny), qwen, 3, Thresholds(), 2)
    with pytest.raises(ValueError, match="at least 2 seeds"):
        measure_rate_resolution(Experiment(**tiny), qwen, 4, Thresholds(), 1)
    with pytest.raises(ValueError, match="tiny-llama twice"):
        measure_rate_resolution(Experiment(**tiny), Experiment(**tiny), 4, Thresholds(), 2)
