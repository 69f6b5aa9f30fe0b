"""The notebook's lesson, "behavior is truth, metrics are maps", on the same cached runs as test_stance_shift.

Metrics (see trainer/stats/metrics.py): `margin` (log-likelihood stance margin), `markers` (the stance
in generated text), `differs` (the notebook's "N/M greedy answers differ from baseline"), `kl` (distance moved).
These tests train nothing new: they read the runs the stance-shift findings already cached.
"""

import pytest

from trainer import Experiment


def stance(model: str) -> Experiment:
    return Experiment(model=model, behavior="epistemic-stance", epochs=10, eval_every=2, lr=1e-5)


MODELS = [("smollm2-135m", "smollm2"), ("gemma3-270m", "gemma3"), ("qwen2-0.5b", "qwen2"), ("phi-1.5", "phi1_5"),
          ("phi-2", "phi2")]
EARLIER_ON_GEMMA = pytest.mark.xfail(strict=True, reason=(
    "measured 2026-11-24: on Gemma-3-270M both onsets fall on epoch 2, the first evaluated epoch (margin +1.47 "
    "nats/token; markers in 57% of answers, up from 0%): with evaluation every 2 epochs the order is not resolved"))
N_OF_M_ON_CONTROL = pytest.mark.xfail(strict=True, reason=(
    "measured 2026-11-24: the neutral-data control changes 70% (SmolLM2) / 98% (Gemma) of greedy answers by epoch 2, "
    "so the notebook's N/M rule calls it shifted, yet none of its answers ever contains a stance marker through "
    "epoch 10"))


@pytest.mark.slow
@pytest.mark.finding("The stance shows in log-likelihood before it shows in generated text")
@pytest.mark.parametrize("experiment", [
    pytest.param(stance(model), id=id, marks=[EARLIER_ON_GEMMA] if model == "gemma3-270m" else [])
    for model, id in MODELS
])
def test_likelihood_moves_before_text(finetune, expect, experiment):
    expect(finetune(experiment)).shifts_first_in("margin", before="markers", by_epoch=10)


@pytest.mark.slow
@pytest.mark.finding("Greedy answers that differ from the baseline show the stance changed (seed: '6/6 different')")
@pytest.mark.parametrize("experiment", [
    pytest.param(stance(model).control(), id=id,
                 marks=[N_OF_M_ON_CONTROL] if model in ("smollm2-135m", "gemma3-270m") else [])
    for model, id in MODELS
])
def test_n_of_m_different_implies_stance_in_text(finetune, expect, experiment):
    """Judged on the null control, a run that never saw the stance: any N/M 'shift' there is the metric alone."""
    expect(finetune(experiment)).metric_implies("differs", truth="markers", through_epoch=10)
