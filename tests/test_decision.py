"""Early decision over replicate seeds, on tiny models: stop once decided, same answer, resumable."""

from tiny import TINY as TINY_MODEL_RUN

from trainer import Experiment
from trainer.behavior import load_behavior
from trainer.runs.obtain import decisions, obtain
from trainer.runs.trial import Trial
from trainer.stats.verdict import Thresholds, judge_seeds
from trainer.studies.early_decision import first_shift
from trainer.training.batches import training_examples

TINY = {**TINY_MODEL_RUN, "eval_every": 2, "epochs": 6}
LOOSE = Thresholds(min_gain=0.01)


def test_a_shift_stops_training_at_the_deciding_look_and_the_record_says_so():
    trial = Trial(Experiment(**TINY), seeds=3, progress=False)
    decision = first_shift(trial, 6, LOOSE, "shift by epoch 6")
    assert decision.onset == 2 and decision.trained_through == 2 and decision.stopped_early
    for run in decision.runs:
        record = obtain(Experiment(**{**TINY, "seed": run.experiment["seed"],
                                      "generate": run.experiment["generate"]}).with_epochs(2), progress=False)
        assert record.record.epochs_done == 2, "trained past the deciding epoch"
        note = decisions(record)[-1]
        assert note["stopped_early"] and note["trained_through"] == 2 and "not trained" in note["summary"]


def test_early_decision_gives_the_answer_full_training_gives():
    trial = Trial(Experiment(**TINY), seeds=3, progress=False)
    early = first_shift(trial, 6, LOOSE, "q")
    runs = trial.runs(6)  # now train everything and judge every look
    full = [judge_seeds(runs, epoch, LOOSE, looks=3) for epoch in (2, 4, 6)]
    assert early.onset == next(v.epoch for v in full if v.shifted)


def test_a_question_that_needs_more_epochs_resumes_the_cached_runs(capsys):
    trial = Trial(Experiment(**{**TINY, "data": "control"}), seeds=2, progress=False)
    first_shift(trial, 2, LOOSE, "no shift through 2")
    capsys.readouterr()
    decision = first_shift(trial, 6, Thresholds(min_gain=10.0), "no shift through 6")
    assert decision.onset is None and decision.trained_through == 6 and not decision.stopped_early
    assert capsys.readouterr().err.count("resuming tiny-llama from cached epoch 2") == 2


def test_replicate_seeds_resample_the_examples_and_seed_0_keeps_them_as_written():
    behavior = load_behavior("epistemic-stance")
    assert training_examples(behavior, "train", 0) == behavior.train
    resamples = {training_examples(behavior, "train", seed) for seed in range(1, 6)}
    assert len(resamples) == 5 and all(len(r) == len(behavior.train) for r in resamples)
    assert all(set(r) <= set(behavior.train) for r in resamples)
    assert training_examples(behavior, "train", 3) == training_examples(behavior, "train", 3)


def test_replicate_runs_differ_and_skip_generation():
    runs = Trial(Experiment(**TINY), seeds=2, progress=False).runs(2)
    assert runs[0].evaluation(2).margins != runs[1].evaluation(2).margins
    assert runs[0].evaluation(2).has_text and not runs[1].evaluation(2).has_text
    assert runs[1].baseline.has_text, "the shared baseline always carries text"


def test_a_shift_question_past_a_stopped_run_says_where_and_why_it_stopped():
    import pytest

    from trainer.runs.trial import StoppedRun

    nan_recipe = Experiment(**{**TINY, "eval_every": 1, "generate": False}, precision="fp16")  # NaN at step 1
    trial = Trial(nan_recipe, seeds=1, progress=False, with_control=False)
    with pytest.raises(StoppedRun, match=r"stopped at epoch 1 \(non-finite weights at step 1\).*epoch 2 cannot "
                                         r"be judged.*on_nonfinite='continue'"):
        first_shift(trial, 4, LOOSE, "shift by epoch 4")


def test_numerical_questions_train_the_first_seed_without_a_control():
    trial = Trial(Experiment(**TINY), seeds=3, progress=False)
    run = trial.primary(2, with_control=False)
    assert run.control is None and run.experiment["seed"] == 0


def test_a_no_shift_that_rests_on_the_effect_floor_alone_says_so_with_its_rate():
    """Tiny runs at lr 1e-3 move the margin far beyond their controls, but not by 100 nats/token: every test
    passes except the floor, so the verdict says it rests on the floor, and projects where the floor is met."""
    floor = Thresholds(min_gain=100.0)
    decision = first_shift(Trial(Experiment(**TINY), seeds=3, progress=False), 2, floor, "no shift through 2")
    rate, crossing = decision.below_floor()
    look = decision.verdicts[-1]
    assert decision.onset is None and rate == look.gain_beyond_controls / 2 > 0 and crossing == 100.0 / rate > 2
    verdict = decision.judge_no_shift()
    assert verdict.holds and "Moving, below the floor" in verdict.explanation and f"near epoch {crossing:.0f}" in \
        verdict.explanation


def test_a_run_that_does_not_move_is_not_called_moving():
    decision = first_shift(Trial(Experiment(**{**TINY, "lr": 0.0}), seeds=3, progress=False), 2, LOOSE, "q")
    assert decision.onset is None and decision.below_floor() is None
    assert "below the floor" not in decision.judge_no_shift().explanation


def test_movement_the_tests_do_not_support_is_not_called_moving_below_the_floor():
    """The same moving runs, judged at an alpha no test can meet: the verdict does not rest on the floor alone."""
    strict = Thresholds(min_gain=100.0, alpha=1e-12)
    decision = first_shift(Trial(Experiment(**TINY), seeds=3, progress=False), 2, strict, "q")
    assert decision.verdicts[-1].gain_beyond_controls > 0 and decision.below_floor() is None


def test_a_sweep_stops_at_the_first_configuration_that_shifts_and_says_it_contradicts_the_claim():
    """'No configuration shifts' is contradicted by one that does: the ones after it are never trained."""
    from trainer.runs.obtain import is_cached
    from trainer.studies.early_decision import first_shift_among, judge_none_shift

    sweep = [Trial(Experiment(**{**TINY, "lr": lr}), seeds=3, progress=False) for lr in (0.0, 1e-3, 2e-3)]
    decisions = first_shift_among(sweep, 2, LOOSE, "no shift through 2")
    assert [d.onset for d in decisions] == [None, 2], "decided in order, stopped at the first shift"
    assert not is_cached(sweep[2].experiment.with_epochs(2)), "a configuration after the contradiction trained"
    verdict = judge_none_shift(decisions, sweep, 2)
    assert not verdict.holds
    assert "full fine-tuning, lr=0.001 shifted" in verdict.explanation and "is contradicted" in verdict.explanation
    assert "not trained, the claim being contradicted already: full fine-tuning, lr=0.002" in verdict.explanation


def test_a_sweep_where_nothing_shifts_holds_for_the_configurations_tried():
    from trainer.studies.early_decision import first_shift_among, judge_none_shift

    sweep = [Trial(Experiment(**{**TINY, "lr": 0.0, "seed": seed}), seeds=2, progress=False) for seed in (0, 5)]
    decisions = first_shift_among(sweep, 2, LOOSE, "q")
    verdict = judge_none_shift(decisions, sweep, 2)
    assert verdict.holds and len(decisions) == 2 and "says nothing of others" in verdict.explanation


def test_a_no_shift_for_want_of_agreement_across_seeds_says_so():
    """Two tiny seeds each shift by epoch 2, far beyond their controls, but Welch's test over two seeds cannot reach
    alpha: the no-shift verdict names the test it rests on, and what would decide it."""
    decision = first_shift(Trial(Experiment(**TINY), seeds=2, progress=False), 2, LOOSE, "no shift through 2")
    look = decision.short_of_seeds()
    assert decision.onset is None and look is not None and look.shifted_seeds == 2
    assert look.p_across_seeds >= look.alpha_per_look and look.gain_beyond_controls >= LOOSE.min_gain
    verdict = decision.judge_no_shift()
    assert verdict.holds and "Shifted seed by seed, not across seeds" in verdict.explanation
    assert "more seeds (--ft-seeds)" in verdict.explanation
    still = first_shift(Trial(Experiment(**{**TINY, "lr": 0.0}), seeds=2, progress=False), 2, LOOSE, "q")
    assert still.short_of_seeds() is None and "seed by seed" not in still.judge_no_shift().explanation
