"""The cache key follows everything that changes a run's outcome and nothing else (property tests)."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from test_models import save_tiny  # tests/ is on sys.path (pytest's prepend import mode)

from trainer import Experiment
from trainer.behavior import BEHAVIOR_DIRS_ENV, DEFAULT_BEHAVIOR_DIR
from trainer.cache import store
from trainer.experiment import LoRA, Unfreeze
from trainer.models.sources import content_sha256
from trainer.runs import keys as run_keys
from trainer.runs import obtain as runner

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
    monkeypatch.setattr(run_keys, "CODE_VERSION", "another-version")
    assert runner.experiment_key(BASE) != before


def _string_leaves(doc, path=()):
    """Every string in a behavior file, with its path (prompts, answers, markers, ...)."""
    if isinstance(doc, str):
        yield path
    elif isinstance(doc, dict | list):
        for key, value in (doc.items() if isinstance(doc, dict) else enumerate(doc)):
            yield from _string_leaves(value, (*path, key))


def _edited(doc, path, suffix):
    doc = copy.deepcopy(doc)
    holder = doc
    for key in path[:-1]:
        holder = holder[key]
    holder[path[-1]] += suffix
    return doc


BEHAVIOR = json.loads((DEFAULT_BEHAVIOR_DIR / "epistemic-stance.json").read_text())
LEAVES = list(_string_leaves(BEHAVIOR))


@SETTINGS
@given(st.sampled_from(LEAVES), st.text(min_size=1, max_size=3))
def test_editing_any_text_of_the_behavior_file_changes_the_key(leaf, suffix):
    """The same behavior name found in a folder holding the original file, its edit, or a copy."""
    keys = []
    with tempfile.TemporaryDirectory() as temp:
        for version, doc in enumerate((BEHAVIOR, _edited(BEHAVIOR, leaf, suffix), BEHAVIOR)):
            folder = Path(temp) / str(version)
            folder.mkdir()
            (folder / "stance-copy.json").write_text(json.dumps(doc))
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv(BEHAVIOR_DIRS_ENV, str(folder))
                keys.append(runner.experiment_key(dataclasses.replace(BASE, behavior="stance-copy")))
    assert keys[0] != keys[1], f"editing {leaf} did not change the key"
    assert keys[0] == keys[2], "the same content should keep the key"


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    """A tiny model saved as a local Hugging Face folder (safetensors), so its weights can be edited."""
    folder = tmp_path_factory.mktemp("tiny-folder")
    save_tiny(folder)
    return folder


@SETTINGS
@given(st.data())
def test_changing_any_weight_of_a_local_model_changes_the_key(tiny_folder, data):
    weights = load_file(str(tiny_folder / "model.safetensors"))
    name = data.draw(st.sampled_from(sorted(weights)))
    index = data.draw(st.integers(0, weights[name].numel() - 1))
    delta = data.draw(st.sampled_from([1e-6, -1e-3, 0.5, 1.0]))
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp) / "model"
        shutil.copytree(tiny_folder, folder)
        before = runner.experiment_key(dataclasses.replace(BASE, model=str(folder)))
        changed = {k: v.clone() for k, v in weights.items()}
        changed[name].view(-1)[index] += delta
        save_file(changed, str(folder / "model.safetensors"), metadata={"format": "pt"})
        after = runner.experiment_key(dataclasses.replace(BASE, model=str(folder)))
        save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
        restored = runner.experiment_key(dataclasses.replace(BASE, model=str(folder)))
    assert before != after, f"changing {name}[{index}] by {delta} kept the key"
    assert restored == before, "the original weights, written again, should give the original key"


def test_a_same_size_rewrite_within_one_file_time_tick_is_not_missed(tmp_path):
    """File times advance in coarse ticks: a rewrite may keep size and mtime. The hash must still change."""
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"a" * 64)
    first = content_sha256(weights)
    stamp = weights.stat()
    weights.write_bytes(b"b" * 64)
    os.utime(weights, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # the same tick as the first write
    assert content_sha256(weights) != first
    old = time.time_ns() - 3600 * 10**9
    os.utime(weights, ns=(old, old))  # an old, settled file is remembered, so warm runs skip hashing
    assert content_sha256(weights) == content_sha256(weights)
    assert len(list((store.cache_root() / "fingerprints").iterdir())) == 1
