"""The notebook's other training methods (LoRA, selective unfreezing) and its "critical layers" question.

Declarations only; the runs decide. A seed claim the data contradicts stays as xfail(strict=True)
with the measured reason.
"""

import pytest

from trainer import Experiment
from trainer.experiment import LoRA, Unfreeze

MODELS = ["smollm2-135m", "gemma3-270m", "qwen2-0.5b", "phi-1.5", "phi-2"]
NOTEBOOK_LORA = LoRA(rank=32, alpha=64, targets=("q_proj", "v_proj"))  # the notebook's r=32 on q and v
NOTEBOOK_LAYERS = (0.54, 0.63)  # the notebook's critical layers: 13 and 15 of Qwen2's 24


# The sweep behind "no amount of rank increase will work": ranks 8, 32 and 128 on the notebook's q and v, and
# every linear layer, each with alpha = 2 x rank (the notebook's ratio, so the adapter's scale stays the same),
# at the full fine-tuning lr and at 10x. Ordered likeliest to shift first: one shift decides the claim.
LORA_SWEEP = [(lr, LoRA(rank=rank, alpha=2 * rank, targets=targets))
              for lr in (1e-4, 1e-5)
              for rank, targets in ((32, "all-linear"), (128, ("q_proj", "v_proj")), (32, ("q_proj", "v_proj")),
                                    (8, ("q_proj", "v_proj")))]


def lora(model: str, lr: float, method: LoRA = NOTEBOOK_LORA) -> Experiment:
    """The notebook's recipe (5 examples, 10 epochs) with the adapter in place of full fine-tuning."""
    return Experiment(model=model, method=method, epochs=10, eval_every=5, lr=lr, generate=False)


def unfreeze(model: str, layers: tuple[float, ...]) -> Experiment:
    return Experiment(model=model, method=Unfreeze(layers), epochs=10, eval_every=5, generate=False)


def per_model(extended: tuple[str, ...] = (), contradicted: dict[str, str] | None = None,
              measured: str = "") -> list:
    """One param per model; `extended` ones run outside CI's 30 minutes (see the `extended` marker),
    `contradicted` ones are strict xfails with the measured reason."""
    params = []
    for model in MODELS:
        marks = [pytest.mark.extended] if model in extended else []
        if model in (contradicted or {}):
            marks.append(pytest.mark.xfail(strict=True, reason=(measured or MEASURED) + contradicted[model]))
        params.append(pytest.param(model, id=model, marks=marks))
    return params


MEASURED = "measured 2026-11-24 (CPU, fp32, 5 examples): "
MEASURED_SWEEP = "measured 2026-12-05 (CPU, fp32, 5 examples, 3 seeds with controls): "
# Gemma-3's LoRA and unfreezing runs cost ~15 CPU-minutes cold, beyond CI's budget: `make report` runs them.
GEMMA_EXTENDED = ("gemma3-270m",)
# The LoRA pair on SmolLM2 (3 seeds + controls x 10 epochs at two learning rates, ~6 minutes cold) made
# way in CI's 30 minutes for the memory findings; the tiny-model tests still check LoRA's mechanics there.
LORA_EXTENDED = ("smollm2-135m", "gemma3-270m")


pytestmark = pytest.mark.slow


@pytest.mark.finding("LoRA r=32 on q and v at the full fine-tuning lr (1e-5) produces no shift in 10 epochs")
@pytest.mark.parametrize("model", per_model(extended=LORA_EXTENDED))
def test_lora_r32_at_the_full_finetuning_lr_produces_no_shift(finetune, expect, model):
    expect(finetune(lora(model, lr=1e-5))).does_not_shift(through_epoch=10)


@pytest.mark.finding("Low-rank adaptation cannot shift the stance at any rank (seed: 'no amount of rank increase "
                     "will work', 'epistemic stance is high-rank')")
@pytest.mark.parametrize("model", per_model(extended=LORA_EXTENDED, contradicted={
    "smollm2-135m": "the sweep's first configuration, LoRA r=32 on every linear layer at lr 1e-4, shifts at epoch "
                    "5 (3/3 seeds; +0.80 nats/token beyond the controls, p across seeds 1.4e-5), so the claim of "
                    "impossibility fails; the other 7 configurations were not needed (see also the r=32 q,v finding "
                    "at 1e-4, which shifts by epoch 10).",
    "gemma3-270m": "LoRA r=32 on every linear layer at lr 1e-4 shifts at epoch 5 (3/3 seeds; +1.72 nats/token "
                   "beyond the controls, p across seeds 0.0014)."}, measured=MEASURED_SWEEP))
def test_no_lora_rank_or_lr_shifts_the_stance(finetune, expect, model):
    expect([finetune(lora(model, lr, method)) for lr, method in LORA_SWEEP]).none_shifts(by_epoch=10)


@pytest.mark.finding("LoRA r=32 at ~10x the full fine-tuning learning rate shifts")
@pytest.mark.parametrize("model", per_model(extended=LORA_EXTENDED))
def test_lora_r32_at_ten_times_the_lr_shifts(finetune, expect, model):
    expect(finetune(lora(model, lr=1e-4))).shifts(by_epoch=10)


@pytest.mark.finding("Selective unfreezing of 1 or 2 layers gives NaN gradients with 5 examples (seed)")
@pytest.mark.parametrize("layers", [NOTEBOOK_LAYERS[:1], NOTEBOOK_LAYERS], ids=["1-layer", "2-layers"])
@pytest.mark.parametrize("model", per_model(extended=GEMMA_EXTENDED, contradicted={
    "smollm2-135m": "unfreezing layer 16 (54%), or layers 16 and 19 (54%, 63%), trains 10 epochs at lr 1e-5 "
                    "with every loss, gradient and weight finite (largest gradient norm 2.44 and 3.35); the "
                    "notebook's NaN comes from fp16 optimizer state (see test_precision.py), not from 5 examples.",
    "gemma3-270m": "unfreezing layer 10 (54%), or layers 10 and 11, trains 10 epochs at lr 1e-5 with every "
                   "loss, gradient and weight finite (largest gradient norm 7.83 and 10.3)."}))
def test_selective_unfreezing_goes_nan(finetune, expect, model, layers):
    expect(finetune(unfreeze(model, layers))).goes_nonfinite(by_epoch=10, what="gradients")


@pytest.mark.finding("Selective unfreezing in fp32 stays finite")
@pytest.mark.parametrize("layers", [NOTEBOOK_LAYERS[:1], NOTEBOOK_LAYERS], ids=["1-layer", "2-layers"])
@pytest.mark.parametrize("model", per_model(extended=GEMMA_EXTENDED))
def test_fp32_selective_unfreezing_stays_finite(finetune, expect, model, layers):
    expect(finetune(unfreeze(model, layers))).stays_finite(through_epoch=10)


@pytest.mark.finding("Full fine-tuning moves the layers at 54% and 63% depth most (seed: Qwen's layers 13 and 15)")
@pytest.mark.parametrize("model", per_model(contradicted={
    "smollm2-135m": "at the onset (epoch 2, two AdamW steps) every one of the 30 layers moved by the same "
                    "relative amount within 8% (||W-W0||/||W0|| 0.95e-4 to 1.02e-4); the top two, layers 5 "
                    "(17%) and 7 (23%), differ by 0.01%: Adam's normalised update singles out no layer.",
    "gemma3-270m": "at the onset (epoch 2) the first layer moved most (layer 0, ||W-W0||/||W0|| 9.8e-5), 2.5x "
                   "the next (layer 1 at 6% depth, 3.9e-5; median of the 18 layers 2.9e-5): the embedding end, "
                   "not 54%/63%."}))
def test_full_finetune_moves_the_seed_s_critical_layers_most(finetune, expect, model):
    reference = Experiment(model=model, epochs=10, eval_every=2, lr=1e-5)  # the reference shift's run, epoch 2
    expect(finetune(reference)).most_changed_layers_near(NOTEBOOK_LAYERS, epoch=2, tolerance=0.1)
