"""The inertia curve (notebook: "Current Experiment: Inertia Curve"), with the statistics to judge it.

Each model is trained with the notebook's recipe over --ft-seeds replicate seeds, each with a null control,
evaluated every epoch through 6 and decided early. The curve is read three ways (docs/inertia.md): the onset
epoch (first epoch a majority of seeds shifted; one value per model), and per seed the rate (gain beyond the
control per optimizer step at the first look) and the steps to the effect floor. The onset saturates (at the
notebook's 1e-5 every model shifts after its first step), so the claim is decided on the rate, at 1e-5, 3e-6
and 1e-6 (chosen by benchmarks/inertia_pilot.py); the onset and the steps are further readings. Models
without weights on this machine are listed in the curve's evidence, not skipped.

Measured 2026-12-05: at every learning rate the largest model here (Gemma-3-270M) moves 3.4-3.8x faster
per step than SmolLM2-135M, so "larger models need more epochs" is contradicted on every reading (strict
xfails below). The rate tells the two offline models apart in 400/400 pairs of 3-seed groups, and one model
from itself in at most 1/20 splits. The onset rule's own error rates (lr 1e-5): 0/20 false positives and
20/20 power on both models.

This tier takes ~37 minutes cold on 2 CPU cores, so `make test` deselects it (-m "not inertia");
`make report` and `make inertia` run it.
"""

import pytest

from trainer import Experiment
from trainer.stats.curve import ReportedOnset

NATURAL = ["smollm2-135m", "gemma3-270m", "qwen2-0.5b", "phi-1.5", "phi-2"]  # pretrained at their size
LADDER = ["smollm2-135m-15l", "smollm2-135m-22l", "smollm2-135m"]  # one pretraining, layers removed
BY_EPOCH = 6
# Learning rates: the notebook's 1e-5, 3e-6, and 1e-6, where the pilot's onsets spread over 2 to 6+ epochs (3e-7
# left every SmolLM2 model censored at epoch 6: docs/inertia.md), so "bigger is slower" is not one lr's artefact.
# The notebook's own points, drawn beside the measured ones and marked as reported: "Qwen 0.5B: 2 epochs",
# "Phi-2 2.7B: 10+ epochs" (its lr, data and rule for a shift are not the suite's; it is never in the statistics).
NOTEBOOK_ONSETS = (ReportedOnset("qwen2-0.5b", 494_000_000, 2),
                   ReportedOnset("phi-2", 2_700_000_000, 10, at_least=True))


MEASURED = "measured {} (3 seeds, evaluated every epoch, offline models only): "


def contradicted(lr: float, reason: str, on: str = "2026-12-05") -> pytest.param:
    """A learning rate at which the data contradicts the claim: strict xfail, so a flip shows up."""
    return pytest.param(lr, id=f"lr{lr:g}", marks=pytest.mark.xfail(strict=True, reason=MEASURED.format(on) + reason))


def holds_at(lr: float) -> pytest.param:
    return pytest.param(lr, id=f"lr{lr:g}")


def onsets(lr: float, model: str = "smollm2-135m") -> Experiment:
    """The notebook's recipe, evaluated every epoch (onsets are 1-6, so every epoch counts), margins only."""
    return Experiment(model=model, epochs=BY_EPOCH, eval_every=1, lr=lr, generate=False)


pytestmark = [pytest.mark.slow, pytest.mark.inertia]


def natural_curve(inertia_curve, lr: float):
    return inertia_curve(onsets(lr), LADDER[:-1] + NATURAL, BY_EPOCH, NOTEBOOK_ONSETS)


@pytest.mark.finding("Larger models need more epochs to shift (notebook's hypothesis)")
@pytest.mark.parametrize("lr", [
    contradicted(1e-5, "every model here (81M and 106M ladder rungs, SmolLM2-135M, Gemma-3-270M) shifts after "
                       "its first epoch (one optimizer step, every seed): onset 1 for all sizes, no growth.",
                 "2026-11-24"),
    contradicted(3e-6, "onsets 2 (81M rung), 1 (106M rung), 3 (SmolLM2-135M), 1 (Gemma-3-270M, the largest): "
                       "Spearman rho -0.21, one-sided permutation p 0.67 (0.61 by the t approximation first used).",
                 "2026-11-24"),
    contradicted(1e-6, "onsets 4 (81M rung), 3 (106M rung), none by 6 (SmolLM2-135M), 2 (Gemma-3-270M): where "
                       "observed they fall with size (rho -1); three observed onsets could not reach p < 0.05."),
])
def test_larger_models_need_more_epochs(inertia_curve, expect_curve, lr):
    expect_curve(natural_curve(inertia_curve, lr)).slower_with_size(by="onset")


@pytest.mark.finding("Larger models move more slowly: less margin gain per optimizer step beyond the control")
@pytest.mark.parametrize("lr", [
    contradicted(1e-5, "the largest moves fastest: Gemma-3-270M 0.79 nats/token per step (95% CI 0.67-0.92), "
                       "SmolLM2-135M 0.23 (0.23-0.24), the rungs 0.30 and 0.32; Spearman rho +0.32 over 12 seeds, "
                       "one-sided p 0.86."),
    contradicted(3e-6, "Gemma-3-270M 0.28 (0.23-0.34), SmolLM2-135M 0.075 (0.073-0.077), the rungs 0.094 and "
                       "0.10; rho +0.37, p 0.89."),
    contradicted(1e-6, "Gemma-3-270M 0.098 (0.079-0.12), SmolLM2-135M 0.026 (0.025-0.026), the rungs 0.032 and "
                       "0.036; rho +0.43, p 0.93."),
])
def test_larger_models_move_more_slowly(inertia_curve, expect_curve, lr):
    expect_curve(natural_curve(inertia_curve, lr)).slower_with_size(by="rate")


@pytest.mark.finding("Larger models need more optimizer steps to reach the effect floor (interpolated)")
@pytest.mark.parametrize("lr", [
    contradicted(1e-5, "every seed is past the floor at the first look, so the steps are floor / rate: Gemma-3 "
                       "0.13 steps, SmolLM2-135M 0.43, the rungs 0.34 and 0.32; rho -0.32, p 0.86."),
    contradicted(3e-6, "Gemma-3 0.35 steps, SmolLM2-135M 1.35, the rungs 1.09 and 0.91; rho -0.43 over 11 seeds "
                       "(1 never reached the floor), p 0.91."),
    contradicted(1e-6, "Gemma-3 1.03 steps, SmolLM2-135M 4.03, the rungs 2.91 and 2.73; rho -0.42 over 10 seeds "
                       "(2 censored at their model's onset), p 0.89."),
])
def test_larger_models_need_more_steps_to_the_floor(inertia_curve, expect_curve, lr):
    expect_curve(natural_curve(inertia_curve, lr)).slower_with_size(by="steps")


@pytest.mark.finding("Onset grows log-linearly rather than linearly with size (seed: 'roughly linear or log-linear')")
@pytest.mark.parametrize("lr", [
    contradicted(1e-5, "onset is 1 for every model, so both fits are flat (slope 0, equal AIC): nothing grows.",
                 "2026-11-24"),
    contradicted(3e-6, "no growth: the log-linear slope is -1.37 epochs per decade of parameters "
                       "(AIC 4.08), the linear one negative too (AIC 3.86).", "2026-11-24"),
    contradicted(1e-6, "no growth: the log-linear slope is -3.5 epochs per decade over the three observed onsets "
                       "(AIC -2.3 against -0.9 for the linear fit), both negative."),
])
def test_onset_is_log_linear_in_size(inertia_curve, expect_curve, lr):
    expect_curve(natural_curve(inertia_curve, lr)).log_linear_fits_better(by="onset")


@pytest.mark.finding("Steps to the effect floor grow log-linearly rather than linearly with size")
@pytest.mark.parametrize("lr", [
    contradicted(1e-5, "both slopes negative (log-linear -0.43 steps per decade); the linear fit is better by "
                       "AIC (-58.3 against -55.1)."),
    contradicted(3e-6, "both slopes negative (log-linear -1.44 steps per decade); linear AIC -25.7 against "
                       "-22.7."),
    contradicted(1e-6, "both slopes negative (log-linear -4.2 steps per decade); linear AIC -0.2 against 2.7."),
])
def test_steps_to_the_floor_are_log_linear_in_size(inertia_curve, expect_curve, lr):
    expect_curve(natural_curve(inertia_curve, lr)).log_linear_fits_better(by="steps")


@pytest.mark.finding("With pretraining held fixed, fewer parameters shift sooner (SmolLM2 size ladder)")
@pytest.mark.parametrize("lr", [
    contradicted(1e-5, "15, 22 and 30 layers all shift after the first epoch.", "2026-11-24"),
    contradicted(3e-6, "onsets 2 (15 layers), 1 (22 layers), 3 (30 layers): Spearman rho 0.5, one-sided "
                       "permutation p 0.5; three rungs cannot reach p < 0.05 (1/6 at best); the damaged "
                       "15-layer rung is not faster than the 22-layer one.", "2026-11-24"),
])  # not at 1e-6: three onsets cannot reach p < 0.05 by permutation (1/6 at best); the rate reading below can
def test_size_ladder_onset_grows_with_layers(inertia_curve, expect_curve, lr):
    expect_curve(inertia_curve(onsets(lr), LADDER, BY_EPOCH)).slower_with_size(by="onset")


@pytest.mark.finding("With pretraining held fixed, fewer parameters move faster per step (SmolLM2 size ladder)")
@pytest.mark.parametrize("lr", [
    holds_at(1e-5),  # 2026-12-05: 30 layers 0.23 nats/token per step, 15 and 22 layers 0.30, 0.32: exact p 0.045
    contradicted(3e-6, "the full 30-layer model is the slowest (0.075 nats/token per step against 0.094 and 0.10 "
                       "for 15 and 22 layers), but the rungs are not ordered: rho -0.53 over 9 seeds, exact "
                       "one-sided p 0.084."),
    contradicted(1e-6, "30 layers 0.026, 15 layers 0.032, 22 layers 0.036: rho -0.37, exact p 0.18."),
])
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
@pytest.mark.parametrize("lr", [holds_at(1e-5), holds_at(3e-6), holds_at(1e-6)])
def test_rate_false_positive_rate_within_one_model(rate_resolution, expect_rate, lr):
    resolution = rate_resolution(onsets(lr, REFERENCE[0]), onsets(lr, REFERENCE[1]), replicates=6)
    expect_rate(resolution.false_positive, "splits of one model's seeds told apart").at_most(0.05)


@pytest.mark.finding("The rate tells SmolLM2-135M from Gemma-3-270M with 3 seeds each at least 90% of the time")
@pytest.mark.parametrize("lr", [holds_at(1e-5), holds_at(3e-6), holds_at(1e-6)])
def test_rate_tells_the_offline_models_apart(rate_resolution, expect_rate, lr):
    resolution = rate_resolution(onsets(lr, REFERENCE[0]), onsets(lr, REFERENCE[1]), replicates=6)
    expect_rate(resolution.power, "3-seed groups of the two models told apart").at_least(0.9)
