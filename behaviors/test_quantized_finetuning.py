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


def adapter_on(model: str, quantize: str) -> Experiment:
    """The notebook's 5 examples for 10 epochs, the adapter on a base quantized by bitsandbytes."""
    return Experiment(model=model, method=ADAPTER, quantize=quantize, epochs=10, eval_every=5, lr=1e-4,
                      generate=False)


@pytest.mark.finding("Quantization blocks fine-tuning: a LoRA adapter on a 4-bit (NF4) base does not shift the "
                     "stance (seed: 'Can't quantize and fine-tune')")
@pytest.mark.slow
@pytest.mark.extended
@pytest.mark.parametrize("model", MODELS)
def test_a_4bit_base_blocks_fine_tuning(finetune, expect, model):
    expect(finetune(adapter_on(model, "nf4"))).does_not_shift(through_epoch=10)


@pytest.mark.finding("8-bit blocks fine-tuning: a LoRA adapter on an 8-bit (LLM.int8()) base does not shift the "
                     "stance (seed: 'Can't use 8-bit')")
@pytest.mark.slow
@pytest.mark.extended
@pytest.mark.parametrize("model", MODELS)
def test_an_8bit_base_blocks_fine_tuning(finetune, expect, model):
    expect(finetune(adapter_on(model, "int8"))).does_not_shift(through_epoch=10)


@pytest.mark.finding("Phi-2 fine-tunes within 15 GB with a LoRA adapter on a quantized base (the notebook ruled "
                     "quantization out at its 15 GB wall)")
@pytest.mark.parametrize("recipe", ["qlora-nf4", "qlora-int8"])
def test_phi2_with_an_adapter_on_a_quantized_base_fits_in_15gb(plan, expect_memory, recipe):
    expect_memory(plan("phi-2", recipe, batch=NOTEBOOK_BATCH, seq=NOTEBOOK_SEQ)).fits(T4)
