"""The continuous measure of how fast a model moves (trainer.stats.movement), on arithmetic and tiny runs."""

import pytest
from tiny import TINY as TINY_MODEL_RUN

from trainer import Experiment
from trainer.errors import ExpectationMisuse
from trainer.runs.trial import Trial
from trainer.stats.movement import crossing_steps, estimate, movement
from trainer.stats.verdict import Thresholds, judge_seeds

TINY = {**TINY_MODEL_RUN, "eval_every": 1, "epochs": 3}


@pytest.mark.parametrize("points, floor, expected", [
    ([(1, 0.2)], 0.1, 0.5),  # halfway to the first look
    ([(1, 0.05), (2, 0.15)], 0.1, 1.5),  # between the looks
    ([(2, 0.1)], 0.1, 2.0),  # exactly at a look
    ([(1, 0.05), (2, 0.08)], 0.1, None),  # never: censored
    ([(1, 0.2), (2, 0.05)], 0.1, 0.5),  # the first crossing, whatever comes after
])
def test_steps_to_the_floor_are_interpolated_from_step_0(points, floor, expected):
    assert crossing_steps(points, floor) == (pytest.approx(expected) if expected is not None else None)


def test_an_estimate_over_seeds_carries_a_student_t_interval():
    three = estimate([1.0, 2.0, 3.0])
    assert three.mean == 2.0 and three.low == pytest.approx(2.0 - 4.303 * 1 / 3 ** 0.5, rel=1e-3)
    assert three.high - three.mean == pytest.approx(three.mean - three.low)
    assert estimate([5.0]) == estimate([5.0]) and estimate([5.0]).low == estimate([5.0]).high == 5.0


def test_the_rate_is_the_verdict_s_gain_beyond_the_control_per_step():
    runs = Trial(Experiment(**TINY), seeds=3, progress=False).runs(3)
    moved = movement(runs, [1, 2, 3], floor=0.1)
    looks = [judge_seeds(runs, e, Thresholds(), looks=3) for e in (1, 2, 3)]
    assert moved.first_look_steps == 1  # five examples in one batch: one step an epoch
    for index, rate in enumerate(moved.rates):
        seed = looks[0].per_seed[index]
        assert rate == pytest.approx(seed.gain - seed.control_gain, abs=1e-9)
    assert moved.rate.low <= moved.rate.mean <= moved.rate.high and moved.rate.seeds == 3
    assert all(c is None or 0 < c <= 3 for c in moved.crossings)


def test_a_run_that_does_not_move_has_rate_0_and_never_reaches_the_floor():
    runs = Trial(Experiment(**{**TINY, "lr": 0.0}), seeds=2, progress=False).runs(2)
    moved = movement(runs, [1, 2], floor=0.1)
    assert moved.rates == (0.0, 0.0) and moved.crossings == (None, None) and moved.crossing is None


def test_a_rate_without_the_control_is_a_misuse():
    runs = Trial(Experiment(**TINY), seeds=1, progress=False, with_control=False).runs(1)
    with pytest.raises(ExpectationMisuse, match="null control"):
        movement(runs, [1], floor=0.1)


def test_each_point_of_an_inertia_curve_carries_its_movement():
    from trainer.studies.inertia import measure_curve

    curve = measure_curve(Experiment(**TINY), ["tiny-llama", "tiny-qwen2"], 3, 3, Thresholds(min_gain=0.01),
                          progress=False)
    for point in curve.points:
        assert point.movement is not None and point.movement.rate.seeds == 3
    assert curve.lines().count("nats/token per step") == 2 and "steps to the 0.01 floor" in curve.lines()
