"""Findings about full fine-tuning and the epistemic stance (notebook: "Evidence So Far").

Measured on the offline models (2 cores, CPU, lr 1e-5, 5 examples, 3 seeds): SmolLM2-135M and
Gemma-3-270M both shift at epoch 2, the first evaluated epoch, well before the notebook's 10 (gains
+0.30/+0.33/+0.28 and +1.47/+1.23/+1.36 nats/token; every seed), so training stops there.

Declarations only. A seed claim the runs contradict stays here as xfail(strict=True) with the
measured reason, so CI notices if it ever flips.
"""

import pytest

from trainer import Experiment


def stance(model: str, epochs: int = 10, **overrides) -> Experiment:
    """The notebook's recipe: 5 examples, full FP32 AdamW, constant lr 1e-5, evaluated every 2 epochs."""
    return Experiment(model=model, behavior="epistemic-stance", epochs=epochs, eval_every=2, lr=1e-5, **overrides)


def claim(model: str, by_epoch: int, id: str, *marks) -> pytest.param:
    return pytest.param(stance(model, epochs=by_epoch), by_epoch, id=id, marks=marks)


@pytest.mark.slow
@pytest.mark.finding("Full fine-tuning shifts the epistemic stance within the notebook's epochs")
@pytest.mark.parametrize("experiment, by_epoch", [
    claim("smollm2-135m", 10, "smollm2"),
    claim("gemma3-270m", 10, "gemma3"),
    claim("qwen2-0.5b", 2, "qwen2"),  # seed: "Qwen2-0.5B: 2 epochs, clear behavioral shift"
    claim("phi-1.5", 10, "phi1_5"),  # seed: "expected shift between 2-10 epochs"
    claim("phi-2", 10, "phi2"),  # seed: "Phi-2: 6/6 responses different at epoch 10"
])
def test_full_finetune_shifts_stance(finetune, expect, experiment, by_epoch):
    expect(finetune(experiment)).shifts(by_epoch=by_epoch)


@pytest.mark.slow
@pytest.mark.finding("The null control (same recipe on neutral answers) does not shift the stance")
@pytest.mark.parametrize("experiment", [
    pytest.param(stance("smollm2-135m").control(), id="smollm2"),
    pytest.param(stance("gemma3-270m").control(), id="gemma3", marks=pytest.mark.xfail(strict=True, reason=(
        "measured 2026-11-24: on Gemma-3-270M base the neutral-answer control raises the stance margin too: "
        "every seed's margin rises from epoch 2 (+0.29/+0.11/+0.17 nats/token) to epoch 8 (+2.11/+1.76/+1.79; "
        "t-test across the 3 seeds p = 0.0018 < 0.01/5), with a 0% marker rate: plain answers make the "
        "confident openers unlikely. The shift verdict holds only because the tuned runs exceed their "
        "controls by +1.17 at epoch 2 (across seeds p = 1.4e-4)."))),
    pytest.param(stance("qwen2-0.5b").control(), id="qwen2"),
    pytest.param(stance("phi-1.5").control(), id="phi1_5"),
    pytest.param(stance("phi-2").control(), id="phi2"),
])
def test_null_control_does_not_shift(finetune, expect, experiment):
    expect(finetune(experiment)).does_not_shift(through_epoch=experiment.epochs)
