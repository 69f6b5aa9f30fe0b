"""The four precisions and the non-finite policy on a tiny model: what the seed hit, reproduced in seconds."""

import math

import pytest
from tiny import TINY

from trainer import ConfigError, Experiment
from trainer.cache.record import NonfiniteEvent, Stop
from trainer.runs.obtain import obtain


@pytest.mark.parametrize("precision", ["fp32", "bf16-autocast", "fp16-autocast"])
def test_fp32_master_weights_train_finitely_with_clipping(precision):
    run = obtain(Experiment(epochs=3, precision=precision, clip=1.0, **TINY), progress=False)
    assert run.nonfinite_events == [] and run.stopped is None
    assert run.train_log[-1].loss < run.train_log[0].loss
    assert all(math.isfinite(m) for m in run.evaluation(3).margins)


def test_fp16_parameters_with_a_grad_scaler_are_refused_at_the_first_unscale():
    run = obtain(Experiment(epochs=3, precision="fp16", grad_scaler=True, **TINY), progress=False)
    assert run.stopped == Stop(step=1, reason="ValueError: Attempting to unscale FP16 gradients.", epoch=1)
    assert run.evaluated_epochs == [0, 1], "the stopped run is still probed"
    assert run.record.checkpoint is None


def test_adamw_on_fp16_parameters_turns_weights_non_finite_and_the_run_stops_there():
    run = obtain(Experiment(epochs=3, precision="fp16", **TINY), progress=False)
    assert run.stopped.step == 1 and "weights" in run.stopped.reason
    assert run.nonfinite_events == [NonfiniteEvent(step=1, loss=False, gradients=False, weights=True)]
    again = obtain(Experiment(epochs=5, precision="fp16", **TINY), progress=False)
    assert again.from_cache, "a run that stopped for good answers longer requests from its record"


def test_continue_policy_trains_on_and_records_every_non_finite_step():
    run = obtain(Experiment(epochs=2, precision="fp16", on_nonfinite="continue", **TINY), progress=False)
    assert run.stopped is None and run.evaluated_epochs == [0, 1, 2]
    assert [e.step for e in run.nonfinite_events] == [1, 2]
    assert run.evaluation(2).finite_logits is False and not run.evaluation(2).has_text


def test_fp16_on_a_model_that_overflows_in_fp16_is_refused():
    with pytest.raises(ConfigError, match="gemma3-270m overflows in fp16.*use 'fp32' or 'bf16-autocast'"):
        Experiment(model="gemma3-270m", precision="fp16-autocast")


@pytest.mark.parametrize(("field", "value", "message"), [
    ("precision", "fp8", "precision='fp8': must be one of"),
    ("on_nonfinite", "ignore", "on_nonfinite='ignore': must be one of"),
])
def test_bad_precision_settings_are_named(field, value, message):
    with pytest.raises(ConfigError, match=message):
        Experiment(model="tiny-llama", **{field: value})
