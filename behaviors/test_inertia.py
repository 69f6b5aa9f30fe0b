"""The inertia curve (notebook: "Current Experiment: Inertia Curve"), with the statistics to judge it.

Each point is the onset epoch of one model: the first epoch at which a majority of --ft-seeds
replicate runs shifted beyond their null controls (Bonferroni over the evaluated epochs),
decided early (training stops at the onset). Models without weights on this machine are listed
in the curve's evidence, not skipped; the offline models and the SmolLM2 size ladder are always there.

Measured 2026-11-24: at the notebook's lr 1e-5 every model here shifts after one epoch; at 3e-6 the
onsets are 2, 1, 3, 1 epochs for 81M, 106M, 135M, 268M parameters. The notebook's "larger models need
more epochs" does not hold on these models (strict xfails below). On the curve's own question (lr
1e-5, every epoch through 6) the decision rule's false-positive rate on placebo experiments is 0/20
on both models (the per-seed probe-level rule alone: 0/30 on SmolLM2, 18/30 on Gemma-3), its power
on the reference shift 20/20 on both.

This tier takes ~40 minutes cold on 2 CPU cores, so `make test` deselects it (-m "not inertia");
`make report` and `make inertia` run it.
"""

import pytest

from trainer import Experiment
from trainer.stats.curve import ReportedOnset

NATURAL = ["smollm2-135m", "gemma3-270m", "qwen2-0.5b", "phi-1.5", "phi-2"]  # pretrained at their size
LADDER = ["smollm2-135m-15l", "smollm2-135m-22l", "smollm2-135m"]  # one pretraining, layers removed
BY_EPOCH = 6
# Learning rates: the notebook's 1e-5 and 3e-6, so that "bigger is slower" is not an artefact of one lr.
# The notebook's own points, drawn beside the measured ones and marked as reported: "Qwen 0.5B: 2 epochs",
# "Phi-2 2.7B: 10+ epochs" (its lr, data and rule for a shift are not the suite's; it is never in the statistics).
NOTEBOOK_ONSETS = (ReportedOnset("qwen2-0.5b", 494_000_000, 2),
                   ReportedOnset("phi-2", 2_700_000_000, 10, at_least=True))


MEASURED = "measured 2026-11-24 (3 seeds, evaluated every epoch, offline models only): "


def contradicted(lr: float, reason: str) -> pytest.param:
    """A learning rate at which the data contradicts the claim: strict xfail, so a flip shows up."""
    return pytest.param(lr, id=f"lr{lr:g}", marks=pytest.mark.xfail(strict=True, reason=MEASURED + reason))


def onsets(lr: float, model: str = "smollm2-135m") -> Experiment:
    """The notebook's recipe, evaluated every epoch (onsets are 1-6, so every epoch counts), margins only."""
    return Experiment(model=model, epochs=BY_EPOCH, eval_every=1, lr=lr, generate=False)


pytestmark = [pytest.mark.slow, pytest.mark.inertia]


def measured(lr: float) -> pytest.param:
    """A learning rate new to a finding (issue 19), before its verdict is recorded."""
    return pytest.param(lr, id=f"lr{lr:g}")


def natural_curve(inertia_curve, lr: float):
    return inertia_curve(onsets(lr), LADDER[:-1] + NATURAL, BY_EPOCH, NOTEBOOK_ONSETS)


@pytest.mark.finding("Larger models need more epochs to shift (notebook's hypothesis)")
@pytest.mark.parametrize("lr", [
    contradicted(1e-5, "every model here (81M and 106M ladder rungs, SmolLM2-135M, Gemma-3-270M) shifts after "
                       "its first epoch (one optimizer step, every seed): onset 1 for all sizes, no growth."),
    contradicted(3e-6, "onsets 2 (81M rung), 1 (106M rung), 3 (SmolLM2-135M), 1 (Gemma-3-270M, the largest): "
                       "Spearman rho -0.21, one-sided p 0.61."),
    measured(1e-6),
])
def test_larger_models_need_more_epochs(inertia_curve, expect_curve, lr):
    expect_curve(natural_curve(inertia_curve, lr)).slower_with_size(by="onset")


@pytest.mark.finding("Larger models move more slowly: less margin gain per optimizer step beyond the control")
@pytest.mark.parametrize("lr", [measured(1e-5), measured(3e-6), measured(1e-6)])
def test_larger_models_move_more_slowly(inertia_curve, expect_curve, lr):
    expect_curve(natural_curve(inertia_curve, lr)).slower_with_size(by="rate")


@pytest.mark.finding("Larger models need more optimizer steps to reach the effect floor (interpolated)")
@pytest.mark.parametrize("lr", [measured(1e-5), measured(3e-6), measured(1e-6)])
def test_larger_models_need_more_steps_to_the_floor(inertia_curve, expect_curve, lr):
    expect_curve(natural_curve(inertia_curve, lr)).slower_with_size(by="steps")


@pytest.mark.finding("Onset grows log-linearly rather than linearly with size (seed: 'roughly linear or log-linear')")
@pytest.mark.parametrize("lr", [
    contradicted(1e-5, "onset is 1 for every model, so both fits are flat (slope 0, equal AIC): nothing grows."),
    contradicted(3e-6, "no growth: the log-linear slope is -1.37 epochs per decade of parameters "
                       "(AIC 4.08), the linear one negative too (AIC 3.86)."),
    measured(1e-6),
])
def test_onset_is_log_linear_in_size(inertia_curve, expect_curve, lr):
    expect_curve(natural_curve(inertia_curve, lr)).log_linear_fits_better(by="onset")


@pytest.mark.finding("Steps to the effect floor grow log-linearly rather than linearly with size")
@pytest.mark.parametrize("lr", [measured(1e-5), measured(3e-6), measured(1e-6)])
def test_steps_to_the_floor_are_log_linear_in_size(inertia_curve, expect_curve, lr):
    expect_curve(natural_curve(inertia_curve, lr)).log_linear_fits_better(by="steps")


@pytest.mark.finding("With pretraining held fixed, fewer parameters shift sooner (SmolLM2 size ladder)")
@pytest.mark.parametrize("lr", [
    contradicted(1e-5, "15, 22 and 30 layers all shift after the first epoch."),
    contradicted(3e-6, "onsets 2 (15 layers), 1 (22 layers), 3 (30 layers): Spearman rho 0.5, one-sided p 0.33 "
                       "with three rungs; the damaged 15-layer rung is not faster than the 22-layer one."),
    measured(1e-6),
])
def test_size_ladder_onset_grows_with_layers(inertia_curve, expect_curve, lr):
    expect_curve(inertia_curve(onsets(lr), LADDER, BY_EPOCH)).slower_with_size(by="onset")


@pytest.mark.finding("With pretraining held fixed, fewer parameters move faster per step (SmolLM2 size ladder)")
@pytest.mark.parametrize("lr", [measured(1e-5), measured(3e-6), measured(1e-6)])
def test_size_ladder_moves_more_slowly_with_layers(inertia_curve, expect_curve, lr):
    expect_curve(inertia_curve(onsets(lr), LADDER, BY_EPOCH)).slower_with_size(by="rate")


# The error rates of the rule that decides the curve's onsets, on the question the curve asks (lr 1e-5,
# every epoch through 6, six looks): the first three seeds and controls are the curve's own runs.
REFERENCE = ["smollm2-135m", "gemma3-270m"]


@pytest.mark.finding("The shift decision rule keeps false positives at or below 5% on null runs")
@pytest.mark.parametrize("model", REFERENCE)
def test_false_positive_rate_on_null_runs(error_rates, expect_rate, model):
    rates = error_rates(onsets(1e-5, model), replicates=6, by_epoch=BY_EPOCH)
    expect_rate(rates.false_positive, "placebo-vs-placebo false alarms").at_most(0.05)


@pytest.mark.finding("The shift decision rule detects the reference shift with at least 90% power")
@pytest.mark.parametrize("model", REFERENCE)
def test_power_on_the_reference_shift(error_rates, expect_rate, model):
    rates = error_rates(onsets(1e-5, model), replicates=6, by_epoch=BY_EPOCH)
    expect_rate(rates.power, f"treatment seeds that shift by epoch {BY_EPOCH}").at_least(0.9)


@pytest.mark.finding("A run at lr=0 (placebo) never shifts: probing is deterministic")
def test_lr0_never_shifts(finetune, expect):
    expect(finetune(Experiment(model="smollm2-135m", epochs=4, lr=0.0, generate=False))).does_not_shift(
        through_epoch=4)


# The rate's own error rates (issue 19): does it tell two sizes apart with the suite's 3 seeds, where the onset
# (1 for every model at 1e-5) cannot? Six seeds of each reference model, trained to the first look only.
@pytest.mark.finding("The rate tells one model from itself (two groups of its seeds) at most 5% of the time")
@pytest.mark.parametrize("lr", [measured(1e-5), measured(3e-6), measured(1e-6)])
def test_rate_false_positive_rate_within_one_model(rate_resolution, expect_rate, lr):
    resolution = rate_resolution(onsets(lr, REFERENCE[0]), onsets(lr, REFERENCE[1]), replicates=6)
    expect_rate(resolution.false_positive, "splits of one model's seeds told apart").at_most(0.05)


@pytest.mark.finding("The rate tells SmolLM2-135M from Gemma-3-270M with 3 seeds each at least 90% of the time")
@pytest.mark.parametrize("lr", [measured(1e-5), measured(3e-6), measured(1e-6)])
def test_rate_tells_the_offline_models_apart(rate_resolution, expect_rate, lr):
    resolution = rate_resolution(onsets(lr, REFERENCE[0]), onsets(lr, REFERENCE[1]), replicates=6)
    expect_rate(resolution.power, "3-seed groups of the two models told apart").at_least(0.9)
