"""The seed's other training methods (LoRA, selective unfreezing) and its "critical layers" question.

Declarations only; the runs decide. A seed claim the data contradicts stays as xfail(strict=True)
with the measured reason.
"""

import pytest

from trainer import Experiment
from trainer.experiment import LoRA, Unfreeze

MODELS = ["smollm2-135m", "gemma3-270m", "qwen2-0.5b", "phi-1.5", "phi-2"]
SEED_LORA = LoRA(rank=32, alpha=64, targets=("q_proj", "v_proj"))  # the seed's r=32 on the attention projections
SEED_LAYERS = (0.54, 0.63)  # the seed's critical layers: 13 and 15 of Qwen2's 24


def lora(model: str, lr: float) -> Experiment:
    """The seed's recipe (5 examples, 10 epochs) with the adapter in place of full fine-tuning."""
    return Experiment(model=model, method=SEED_LORA, epochs=10, eval_every=5, lr=lr, generate=False)


def unfreeze(model: str, layers: tuple[float, ...]) -> Experiment:
    return Experiment(model=model, method=Unfreeze(layers), epochs=10, eval_every=5, generate=False)


def per_model(*marks_by_model: tuple[str, object]) -> list:
    marks = dict(marks_by_model)
    return [pytest.param(m, id=m, marks=marks.get(m, ())) for m in MODELS]


pytestmark = pytest.mark.slow


@pytest.mark.finding("LoRA r=32 produces no shift (seed: 'epistemic stance is high-rank')")
@pytest.mark.parametrize("model", per_model())
def test_lora_r32_produces_no_shift(finetune, expect, model):
    expect(finetune(lora(model, lr=1e-5))).does_not_shift(through_epoch=10)


@pytest.mark.finding("LoRA r=32 at ~10x the full fine-tuning learning rate shifts")
@pytest.mark.parametrize("model", per_model())
def test_lora_r32_at_ten_times_the_lr_shifts(finetune, expect, model):
    expect(finetune(lora(model, lr=1e-4))).shifts(by_epoch=10)


@pytest.mark.finding("Selective unfreezing of 1 or 2 layers gives NaN gradients with 5 examples (seed)")
@pytest.mark.parametrize("layers", [SEED_LAYERS[:1], SEED_LAYERS], ids=["1-layer", "2-layers"])
@pytest.mark.parametrize("model", per_model())
def test_selective_unfreezing_goes_nan(finetune, expect, model, layers):
    expect(finetune(unfreeze(model, layers))).goes_nonfinite(by_epoch=10, what="gradients")


@pytest.mark.finding("Selective unfreezing in fp32 stays finite")
@pytest.mark.parametrize("layers", [SEED_LAYERS[:1], SEED_LAYERS], ids=["1-layer", "2-layers"])
@pytest.mark.parametrize("model", per_model())
def test_fp32_selective_unfreezing_stays_finite(finetune, expect, model, layers):
    expect(finetune(unfreeze(model, layers))).stays_finite(through_epoch=10)


@pytest.mark.finding("Full fine-tuning moves the layers at 54% and 63% depth most (seed: Qwen's layers 13 and 15)")
@pytest.mark.parametrize("model", per_model())
def test_full_finetune_moves_the_seed_s_critical_layers_most(finetune, expect, model):
    reference = Experiment(model=model, epochs=10, eval_every=2, lr=1e-5)  # the reference shift's run, epoch 2
    expect(finetune(reference)).most_changed_layers_near(SEED_LAYERS, epoch=2, tolerance=0.1)
