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


def shift_then_placebo(model: str, switch: int) -> Experiment:
    """The notebook's recipe for `switch` epochs, then as many on the placebo, probed at the switch and the end."""
    return Experiment(model=model, epochs=2 * switch, eval_every=switch, placebo_after=switch, generate=False)


@pytest.mark.finding("As many epochs of placebo data undo a stance shift (seed's open question: 'Is there a point "
                     "of no return?')")
@pytest.mark.parametrize("switch", [2, 10])
@pytest.mark.parametrize("model", MODELS)
def test_as_many_placebo_epochs_undo_the_shift(finetune, expect, model, switch):
    expect(finetune(shift_then_placebo(model, switch))).undone_by_placebo(by_epoch=2 * switch)
