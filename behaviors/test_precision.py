"""The notebook's numerical walls: "FP16 + gradient clipping + unscaling = error" and NaN weights.

Declarations only; the runs decide. Gemma-3 is not declared in fp16: it overflows there (asking for
it is a configuration error). Marked `extended`: on CPU an fp16 backward pass takes ~86 s for
SmolLM2 (aten::mm in half precision; fp32: ~3 s), so these real-model runs cost ~6 minutes and
run in `make report` / `make extended`; CI checks the same mechanisms on tiny models
(tests/test_numerics.py). Measured 2026-11-24 on SmolLM2: all three pass.
"""

import pytest

from trainer import Experiment

FP16_MODELS = ["smollm2-135m", "qwen2-0.5b", "phi-1.5", "phi-2"]


def fp16(model: str, precision: str, epochs: int = 1, **overrides) -> Experiment:
    return Experiment(model=model, precision=precision, epochs=epochs, eval_every=epochs, generate=False, **overrides)


pytestmark = [pytest.mark.slow, pytest.mark.extended]


@pytest.mark.finding("Pure fp16 + GradScaler + clipping raises 'Attempting to unscale FP16 gradients' (seed)")
@pytest.mark.parametrize("model", FP16_MODELS)
def test_fp16_parameters_with_a_scaler_cannot_be_unscaled(finetune, expect, model):
    expect(finetune(fp16(model, "fp16", grad_scaler=True))).stops_with("Attempting to unscale FP16 gradients",
                                                                         by_epoch=1)


@pytest.mark.finding("fp16 autocast with fp32 master weights + clipping trains finitely")
@pytest.mark.parametrize("model", FP16_MODELS)
def test_fp16_autocast_with_fp32_master_weights_trains_finitely(finetune, expect, model):
    expect(finetune(fp16(model, "fp16-autocast", epochs=2))).stays_finite(through_epoch=2)


@pytest.mark.finding("AdamW on fp16 parameters with zero gradients turns the weights NaN (regression guard)")
@pytest.mark.parametrize("model", FP16_MODELS)
def test_adamw_on_fp16_parameters_turns_nan(finetune, expect, model):
    expect(finetune(fp16(model, "fp16"))).goes_nonfinite(by_epoch=1, what="weights")
