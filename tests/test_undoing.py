"""Training on the behavior's data, then on its placebo (Experiment(placebo_after=K)), and the question whether
the placebo undoes the shift, on tiny models."""

import pytest
from tiny import TINY as TINY_MODEL_RUN

from trainer import ConfigError, Experiment
from trainer.errors import ExpectationMisuse
from trainer.runs.obtain import is_cached, obtain
from trainer.runs.trial import Trial
from trainer.stats.verdict import Thresholds, judge_seeds
from trainer.studies.undoing import LOOKS, undoing

TINY = {**TINY_MODEL_RUN, "eval_every": 1, "epochs": 4}
LOOSE = Thresholds(min_gain=0.01)


def margins(run, epochs):
    return [run.evaluation(epoch).margins for epoch in epochs]


def test_a_placebo_run_trains_the_behavior_then_the_placebo_and_resumes_exactly(tmp_path, monkeypatch):
    switched = Experiment(**TINY, placebo_after=2)
    run = obtain(switched, progress=False)
    plain = obtain(Experiment(**TINY), progress=False)
    placebo = obtain(Experiment(**TINY, data="control"), progress=False)
    assert margins(run, (1, 2)) == margins(plain, (1, 2)), "the epochs before the switch are the plain run's"
    assert margins(run, (3,)) != margins(plain, (3,)), "epoch 3 should train on the placebo"
    assert margins(run, (3,)) != margins(placebo, (3,)), "from the shifted weights, not from the base"
    assert run.record.experiment["placebo_after"] == 2 and "control@2" in switched.label
    monkeypatch.setenv("FT_CACHE_DIR", str(tmp_path / "fresh"))
    obtain(switched.with_epochs(3), progress=False)  # stopped across the switch, then resumed
    assert margins(obtain(switched, progress=False), (1, 2, 3, 4)) == margins(run, (1, 2, 3, 4))


def test_a_placebo_run_s_control_is_the_placebo_for_as_many_epochs_and_keys_stay_as_they_were():
    switched = Experiment(**TINY, placebo_after=2)
    assert switched.control() == Experiment(**TINY, data="control")
    assert "placebo_after" not in Experiment(**TINY).key_fields() and switched.key_fields()["placebo_after"] == 2
    assert [switched.data_at(e) for e in (1, 2, 3, 4)] == ["train", "train", "control", "control"]


@pytest.mark.parametrize("fields, message", [
    ({"placebo_after": 0}, "must be None or an epoch >= 1"),
    ({"placebo_after": 2, "data": "control"}, "use data='train'"),
])
def test_a_bad_switch_names_the_fix(fields, message):
    with pytest.raises(ConfigError, match=message):
        Experiment(**{**TINY, **fields})


def test_undoing_needs_the_shift_at_the_switch_and_nothing_left_beyond_the_band_at_the_end():
    """Each look at the full alpha (the claim needs both), the end with no effect floor: a residue is not a return."""
    trial = Trial(Experiment(**TINY, placebo_after=2), seeds=3, progress=False)
    result = undoing(trial, 4, LOOSE)
    runs = trial.runs(4)
    assert LOOKS == 1
    switch = judge_seeds(runs, 2, LOOSE, looks=1)
    end = judge_seeds(runs, 4, Thresholds(min_gain=0.0), looks=1)
    assert result.switch.shifted and switch.shifted, "lr 1e-3 shifts a tiny model by epoch 2"
    assert result.end.p_across_seeds == end.p_across_seeds and result.end.min_gain == 0.0
    assert result.undone == (not end.shifted)
    verdict = result.judge_undone()
    assert verdict.holds == result.undone
    assert ("back within it" if result.undone else "still shifted") in verdict.explanation
    assert "after 2 more on the placebo (epoch 4)" in verdict.explanation


def test_without_a_shift_to_undo_the_placebo_epochs_are_not_trained_and_the_verdict_says_why():
    trial = Trial(Experiment(**TINY, placebo_after=2), seeds=2, progress=False)
    result = undoing(trial, 4, Thresholds(min_gain=100.0))
    assert result.end is None and not result.undone
    assert not is_cached(trial.experiment.with_epochs(3)), "trained past the switch with nothing to undo"
    verdict = result.judge_undone()
    assert not verdict.holds and "no shift for the placebo to undo" in verdict.explanation


@pytest.mark.parametrize("placebo_after, by_epoch, message", [(None, 4, "placebo_after=K"), (4, 4, "placebo_after=K"),
                                                              (2, 9, "outside this experiment")])
def test_an_undoing_question_without_a_switch_before_its_epoch_is_a_misuse_found_before_training(
        placebo_after, by_epoch, message):
    trial = Trial(Experiment(**TINY, placebo_after=placebo_after), seeds=2, progress=False)
    with pytest.raises(ExpectationMisuse, match=message):
        undoing(trial, by_epoch, LOOSE)
    assert not is_cached(trial.experiment.with_epochs(1)), "trained before refusing the question"


def test_no_shift_to_undo_for_want_of_agreement_across_seeds_says_so():
    """Two tiny seeds each shift far beyond their controls, but Welch's test over two seeds misses alpha."""
    trial = Trial(Experiment(**TINY, placebo_after=2), seeds=2, progress=False)
    result = undoing(trial, 4, LOOSE)
    assert result.end is None and result.switch.shifted_seeds == 2
    assert "shifted seed by seed, not across seeds" in result.judge_undone().explanation
