"""The notebook's data-scale claim: "Selective unfreezing: need 50-100x more data" (and "data needs
scale with concentration, not total params").

Two layers unfrozen at the notebook's depths (54% and 63%), lr 1e-5, as in test_methods.py: once with
the notebook's 5 examples for 10 epochs (10 steps), once with 60x as many examples of the same stance
(behaviors/data/epistemic-stance-300.json; docs/data/epistemic-stance-300.md says how it was built)
for 2 epochs (120 steps of 5), and once with the 5 examples for those same 120 steps, so that more data
is not confused with more steps. Each with its null control trained on the matching placebo answers.

Declarations only; the runs decide. The 300-example runs cost minutes each on a CPU: `extended`.
"""

import pytest

from trainer import Experiment
from trainer.experiment import Unfreeze

MODELS = ["smollm2-135m", "gemma3-270m", "qwen2-0.5b", "phi-1.5", "phi-2"]
NOTEBOOK_LAYERS = (0.54, 0.63)  # the notebook's critical layers: 13 and 15 of Qwen2's 24
LARGE_SET = "epistemic-stance-300"


def unfreeze_two(model: str) -> Experiment:
    """The notebook's two layers and 5 examples (the same run as test_methods.py's unfreezing findings)."""
    return Experiment(model=model, method=Unfreeze(NOTEBOOK_LAYERS), epochs=10, eval_every=5, generate=False)


def unfreeze_two_for_as_many_steps(model: str) -> Experiment:
    """The 5 examples for the 120 steps the 300-example runs take (one step an epoch), probed every 20."""
    return Experiment(model=model, method=Unfreeze(NOTEBOOK_LAYERS), epochs=120, eval_every=20, generate=False)


def unfreeze_two_with_more_data(model: str) -> Experiment:
    """The same two layers trained on 300 examples: 60 steps an epoch, probed after each."""
    return Experiment(model=model, behavior=LARGE_SET, method=Unfreeze(NOTEBOOK_LAYERS), epochs=2, eval_every=1,
                      generate=False)


pytestmark = [pytest.mark.slow, pytest.mark.extended]


MEASURED = "measured 2026-12-05 (CPU, fp32, 3 seeds with controls): "
FIVE_EXAMPLES_SHIFT = {
    "smollm2-135m": "the 5 examples shift SmolLM2 with only layers 16 and 19 trained by epoch 10 (3/3 seeds; +0.23 "
                    "nats/token beyond the controls, p across seeds 2.8e-5), so more data is not needed for a shift; "
                    "it makes one sooner (300 examples: +0.71 after one epoch of 60 steps).",
    "gemma3-270m": "the 5 examples shift Gemma-3 with only layers 10 and 11 trained by epoch 5 (3/3 seeds; +0.59 "
                   "nats/token beyond the controls, p across seeds 0.0015); 300 examples: +3.7 after one epoch.",
}
SAME_STEPS_SHIFT = {
    "smollm2-135m": "the 5 examples for 120 steps shift SmolLM2 at the first look, epoch 20 (3/3 seeds; +0.45 "
                    "nats/token beyond the controls, p across seeds 3e-5): the steps move it without more data.",
}


def per_model(contradicted: dict[str, str]) -> list:
    """One param per model; the contradicted ones are strict xfails with the measured reason."""
    return [pytest.param(m, marks=pytest.mark.xfail(strict=True, reason=MEASURED + contradicted[m]))
            if m in contradicted else m for m in MODELS]


@pytest.mark.finding("Unfreezing two layers with the notebook's 5 examples produces no shift (seed: it needs "
                     "50-100x more data)")
@pytest.mark.parametrize("model", per_model(FIVE_EXAMPLES_SHIFT))
def test_unfreezing_two_layers_with_five_examples_produces_no_shift(finetune, expect, model):
    expect(finetune(unfreeze_two(model))).does_not_shift(through_epoch=10)


@pytest.mark.finding("Unfreezing two layers with 60x the data (300 examples) shifts the stance")
@pytest.mark.parametrize("model", MODELS)
def test_unfreezing_two_layers_with_sixty_times_the_data_shifts(finetune, expect, model):
    expect(finetune(unfreeze_two_with_more_data(model))).shifts(by_epoch=2)


@pytest.mark.finding("Unfreezing two layers with 60x the data (300 examples) stays finite")
@pytest.mark.parametrize("model", MODELS)
def test_unfreezing_two_layers_with_sixty_times_the_data_stays_finite(finetune, expect, model):
    expect(finetune(unfreeze_two_with_more_data(model))).stays_finite(through_epoch=2)


@pytest.mark.finding("Unfreezing two layers with the 5 examples for the same 120 steps produces no shift (what "
                     "moves the stance is the data, not the steps)")
@pytest.mark.parametrize("model", per_model(SAME_STEPS_SHIFT))
def test_unfreezing_two_layers_with_five_examples_for_as_many_steps_produces_no_shift(finetune, expect, model):
    # Gemma-3 passes, by the test across seeds alone: every seed shifts on its own from epoch 20 (+1.8 to +6.3
    # nats/token beyond the controls) while Welch's p over 3 seeds (0.0019 to 0.013) misses 0.01 / 6 looks; the
    # verdict says so ("shifted seed by seed, not across seeds").
    expect(finetune(unfreeze_two_for_as_many_steps(model))).does_not_shift(through_epoch=120)
