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


# The notebook's cure for NaN: "More conservative LR, stronger clipping". Asked where NaN does appear (AdamW on
# fp16 parameters, above): a 10x lower lr, and a clip 10x tighter than the recipe's 1.0.
CURE_FAILS = ("measured 2026-12-05: the weights still go NaN at the first step, as at lr 1e-5 with clip 1.0 "
              "(test_adamw_on_fp16_parameters_turns_nan): where a gradient is zero, AdamW's fp16 second moment is 0 "
              "and its eps (1e-8) underflows to 0 in fp16, so the update is 0/0. {what} cannot change that: NaN "
              "times any lr is NaN, and clipping scales a zero gradient to zero.")


def per_fp16_model(what: str) -> list:
    """The fp16 models, with SmolLM2's measured contradiction (the others are not on this machine)."""
    reason = CURE_FAILS.format(what=what)
    return [pytest.param(m, marks=pytest.mark.xfail(strict=True, reason=reason)) if m == "smollm2-135m" else m
            for m in FP16_MODELS]


@pytest.mark.finding("A 10x lower learning rate keeps fp16 parameters finite (seed: 'more conservative LR')")
@pytest.mark.parametrize("model", per_fp16_model("A lower lr (1e-6)"))
def test_a_lower_lr_keeps_fp16_parameters_finite(finetune, expect, model):
    expect(finetune(fp16(model, "fp16", lr=1e-6))).stays_finite(through_epoch=1)


@pytest.mark.finding("A 10x tighter gradient clip keeps fp16 parameters finite (seed: 'stronger clipping')")
@pytest.mark.parametrize("model", per_fp16_model("A tighter clip (0.1)"))
def test_a_tighter_clip_keeps_fp16_parameters_finite(finetune, expect, model):
    expect(finetune(fp16(model, "fp16", clip=0.1))).stays_finite(through_epoch=1)
