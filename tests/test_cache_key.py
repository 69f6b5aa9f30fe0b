"""The cache key follows everything that changes a run's outcome and nothing else (property tests)."""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainer import Experiment, runner
from trainer.experiment import LoRA, Unfreeze

# Every Experiment field that changes what the first N epochs compute, with values to change it to.
OUTCOME_FIELDS = {
    "model": st.sampled_from(["tiny-llama", "tiny-qwen2", "tiny-phi"]),
    "lr": st.sampled_from([0.0, 1e-5, 3e-4, 1e-3]),
    "clip": st.sampled_from([None, 0.5, 1.0, 2.0]),
    "batch_size": st.integers(1, 8),
    "weight_decay": st.sampled_from([0.0, 0.01, 0.1]),
    "seed": st.integers(0, 5),
    "data": st.sampled_from(["train", "control"]),
    "eval_every": st.integers(1, 4),
    "gen_tokens": st.integers(1, 32),
    "generate": st.booleans(),
    "precision": st.sampled_from(["fp32", "bf16-autocast"]),
    "method": st.sampled_from([LoRA(rank=4), LoRA(rank=8, targets=("q_proj",)), Unfreeze((0,)), Unfreeze((1,))]),
}
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
BASE = Experiment(model="tiny-llama", epochs=2)


@SETTINGS
@given(st.data())
def test_changing_any_outcome_field_changes_the_key(data):
    name = data.draw(st.sampled_from(sorted(OUTCOME_FIELDS)))
    value = data.draw(OUTCOME_FIELDS[name].filter(lambda v: v != getattr(BASE, name)))
    changed = dataclasses.replace(BASE, **{name: value})
    assert runner.experiment_key(changed) != runner.experiment_key(BASE)


@SETTINGS
@given(st.integers(1, 50))
def test_epochs_and_rebuilding_the_same_experiment_keep_the_key(epochs):
    """Epochs are left out on purpose (a longer run resumes a shorter one); an equal experiment is equal."""
    same = Experiment(**{field.name: getattr(BASE, field.name) for field in dataclasses.fields(BASE)})
    assert runner.experiment_key(dataclasses.replace(same, epochs=epochs)) == runner.experiment_key(BASE)


def test_data_weights_and_code_enter_the_key(monkeypatch):
    components = runner.key_components(BASE)
    assert {"behavior_sha256", "model_fingerprint", "code_version", "torch", "transformers"} <= set(components)
    before = runner.experiment_key(BASE)
    monkeypatch.setattr(runner, "CODE_VERSION", "another-version")
    assert runner.experiment_key(BASE) != before
