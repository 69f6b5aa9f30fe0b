"""The notebook's "Can't quantize and fine-tune", "Can't use 8-bit (blocks fine-tuning)" and "Quantization blocks
fine-tuning" (its hard constraints at Phi-2's 15 GB wall).

A quantized weight cannot train, but QLoRA's answer is an adapter on a quantized frozen base: the base's linear
layers in 4-bit NF4 with double quantization (or LLM.int8()), loaded by transformers + bitsandbytes, with a LoRA
adapter trained in fp32 (Experiment(quantize=...), trainer.models.quantized). The adapter is the configuration the
LoRA sweep found to shift in full precision (r=32 on every linear layer, lr 1e-4; test_methods.py), so a quantized
base that blocked fine-tuning would show as no shift where fp32 shifts. Each run's epoch 0 is its own quantized
base, and its null control trains the same adapter on the same base.

Declarations only; the runs decide. The quantized runs cost minutes each on a CPU: `extended`. The memory plans
(no weights) run in CI.
"""

import pytest

from trainer import Experiment
from trainer.experiment import LoRA

MODELS = ["smollm2-135m", "gemma3-270m", "qwen2-0.5b", "phi-1.5", "phi-2"]
ADAPTER = LoRA(rank=32, alpha=64, targets="all-linear")  # shifts at epoch 5 on an fp32 base (test_methods.py)
T4 = "15GiB"  # the notebook's card (test_memory.py)
NOTEBOOK_BATCH, NOTEBOOK_SEQ = 5, 128


MEASURED = "measured 2026-12-05 (CPU, bitsandbytes 0.50.2, 3 seeds with controls on the same quantized base): "
ADAPTER_SHIFTS = {
    ("smollm2-135m", "nf4"): "the adapter on the NF4 base shifts at epoch 5 (3/3 seeds; +1.19 nats/token beyond the "
                             "controls, p across seeds 1e-5), as on the fp32 base (+0.80).",
    ("gemma3-270m", "nf4"): "the adapter on the NF4 base shifts at epoch 5 (3/3 seeds; +1.82 beyond the controls, "
                            "p 0.00017), as on the fp32 base (+1.72).",
    ("smollm2-135m", "int8"): "the adapter on the 8-bit base shifts at epoch 5 (3/3 seeds; +0.78 beyond the "
                              "controls, p 0.00035).",
    ("gemma3-270m", "int8"): "the adapter on the 8-bit base shifts at epoch 5 (3/3 seeds; +1.78 beyond the controls, "
                             "p 0.002).",
}


def per_model(quantize: str) -> list:
    return [pytest.param(m, marks=pytest.mark.xfail(strict=True, reason=MEASURED + ADAPTER_SHIFTS[m, quantize]))
            if (m, quantize) in ADAPTER_SHIFTS else m for m in MODELS]


def adapter_on(model: str, quantize: str) -> Experiment:
    """The notebook's 5 examples for 10 epochs, the adapter on a base quantized by bitsandbytes."""
    return Experiment(model=model, method=ADAPTER, quantize=quantize, epochs=10, eval_every=5, lr=1e-4,
                      generate=False)


@pytest.mark.finding("Quantization blocks fine-tuning: a LoRA adapter on a 4-bit (NF4) base does not shift the "
                     "stance (seed: 'Can't quantize and fine-tune')")
@pytest.mark.slow
@pytest.mark.extended
@pytest.mark.parametrize("model", per_model("nf4"))
def test_a_4bit_base_blocks_fine_tuning(finetune, expect, model):
    expect(finetune(adapter_on(model, "nf4"))).does_not_shift(through_epoch=10)


@pytest.mark.finding("8-bit blocks fine-tuning: a LoRA adapter on an 8-bit (LLM.int8()) base does not shift the "
                     "stance (seed: 'Can't use 8-bit')")
@pytest.mark.slow
@pytest.mark.extended
@pytest.mark.parametrize("model", per_model("int8"))
def test_an_8bit_base_blocks_fine_tuning(finetune, expect, model):
    expect(finetune(adapter_on(model, "int8"))).does_not_shift(through_epoch=10)


@pytest.mark.finding("Phi-2 fine-tunes within 15 GB with a LoRA adapter on a quantized base (the notebook ruled "
                     "quantization out at its 15 GB wall)")
@pytest.mark.parametrize("recipe", ["qlora-nf4", "qlora-int8"])
def test_phi2_with_an_adapter_on_a_quantized_base_fits_in_15gb(plan, expect_memory, recipe):
    expect_memory(plan("phi-2", recipe, batch=NOTEBOOK_BATCH, seq=NOTEBOOK_SEQ)).fits(T4)
