"""The notebook's open question "Is there a point of no return (sudden transition)?", asked as a finding.

The notebook's recipe (full fine-tuning, lr 1e-5, its 5 examples) trains for K epochs, then for K more on the
behavior's placebo answers (Experiment(placebo_after=K)): if the placebo undoes the shift, the margin comes back
within the placebo band, which is what K + K epochs of the placebo alone do (the null control). K = 2 (just past
the onset on the offline models) and K = 10 (the notebook's full run). Declared as "undone"; the runs decide.

Costs minutes per model on a CPU: `extended`.
"""

import pytest

from trainer import Experiment

MODELS = ["smollm2-135m", "gemma3-270m", "qwen2-0.5b", "phi-1.5", "phi-2"]

pytestmark = [pytest.mark.slow, pytest.mark.extended]

MEASURED = "measured 2026-12-05 (CPU, fp32, 3 seeds, each against the placebo for as many epochs): "
NOT_UNDONE = {
    ("smollm2-135m", 2): "+0.44 nats/token beyond the placebo band after 2 epochs (p across seeds 1.5e-5); after 2 "
                         "placebo epochs +0.60 (p 3e-5, 3/3 seeds): still shifted, and further from the band.",
    ("smollm2-135m", 10): "+1.26 beyond the band after 10 epochs (p 6.1e-5); after 10 placebo epochs +0.83 (p 0.0013, "
                          "3/3 seeds): receding, still shifted.",
    ("gemma3-270m", 2): "+1.17 beyond the band after 2 epochs (p 0.00014); after 2 placebo epochs +1.47 (p 0.00037, "
                        "3/3 seeds): still shifted.",
    ("gemma3-270m", 10): "after 10 epochs every seed shifted on its own, +2.98 beyond the band, but the test across "
                         "seeds missed alpha (p 0.011 vs 0.01: Gemma's placebo moves its margin too), so the rule "
                         "found no shift to undo and the placebo epochs were not trained.",
}


def cases() -> list:
    return [pytest.param(model, switch, id=f"{model}-{switch}", marks=pytest.mark.xfail(
                strict=True, reason=MEASURED + NOT_UNDONE[model, switch])) if (model, switch) in NOT_UNDONE
            else pytest.param(model, switch, id=f"{model}-{switch}")
            for model in MODELS for switch in (2, 10)]


def shift_then_placebo(model: str, switch: int) -> Experiment:
    """The notebook's recipe for `switch` epochs, then as many on the placebo, probed at the switch and the end."""
    return Experiment(model=model, epochs=2 * switch, eval_every=switch, placebo_after=switch, generate=False)


@pytest.mark.finding("As many epochs of placebo data undo a stance shift (seed's open question: 'Is there a point "
                     "of no return?')")
@pytest.mark.parametrize("model, switch", cases())
def test_as_many_placebo_epochs_undo_the_shift(finetune, expect, model, switch):
    expect(finetune(shift_then_placebo(model, switch))).undone_by_placebo(by_epoch=2 * switch)
