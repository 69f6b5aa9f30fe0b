"""The cache key follows everything that changes a run's outcome and nothing else (property tests)."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from tiny import save_tiny

from trainer import Experiment
from trainer.behavior import DEFAULT_BEHAVIOR_DIR
from trainer.cache import store
from trainer.cache.keys import source_digest
from trainer.experiment import LoRA, Unfreeze
from trainer.models.sources import content_sha256
from trainer.runs import keys as run_keys
from trainer.runs import obtain as runner
from trainer.settings import BEHAVIOR_DIRS_ENV

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
    "optimizer": st.sampled_from(["sgd", "adafactor"]),
    "checkpointing": st.just(True),
    "grad_scaler": st.booleans(),
    "on_nonfinite": st.just("continue"),
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
    assert {"behavior_sha256", "model_fingerprint", "code_version", "torch", "transformers", "peft"} <= set(components)
    before = runner.experiment_key(BASE)
    monkeypatch.setattr(run_keys, "CODE_VERSION", "another-version")
    assert runner.experiment_key(BASE) != before


ROOT = Path(__file__).resolve().parent.parent
KEY_OF_BASE = ("from trainer import Experiment; from trainer.runs.keys import experiment_key; "
               "print(experiment_key(Experiment(model='tiny-llama', epochs=2)))")


def _tree_copy(tmp_path: Path) -> Path:
    """The library and the behavior data in a temporary folder, to edit without touching the checkout."""
    copy_root = tmp_path / "copy"
    shutil.copytree(ROOT / "trainer", copy_root / "trainer", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "behaviors" / "data", copy_root / "behaviors" / "data")
    return copy_root


def _key_in(copy_root: Path) -> str:
    """The experiment key as a fresh process running the copy computes it."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(copy_root)}
    done = subprocess.run([sys.executable, "-c", KEY_OF_BASE], cwd=copy_root, env=env, capture_output=True,
                          text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


def test_every_module_that_decides_a_run_s_numbers_is_in_the_key(tmp_path):
    """Each module of the training and model-loading packages, edited in a copy, changes the code digest;
    the folders are read, not a list, so a module added there is covered by existing."""
    copy_root = _tree_copy(tmp_path)
    packages = [copy_root / "trainer" / p.name for p in run_keys.OUTCOME_PACKAGES]
    modules = sorted(path for package in packages for path in package.rglob("*.py"))
    names = {path.relative_to(copy_root / "trainer").as_posix() for path in modules}
    assert {"training/session.py", "training/loop.py", "training/methods.py", "training/probe.py",
            "training/batches.py", "training/checkpoint.py", "training/diagnostics.py",
            "models/sources.py"} <= names
    original = source_digest(packages)
    assert original == source_digest(run_keys.OUTCOME_PACKAGES), "the copy's digest is the checkout's"
    for path in modules:
        text = path.read_text()
        path.write_text(text + "\n# an edit\n")
        assert source_digest(packages) != original, f"editing {path.name} left the key unchanged"
        path.write_text(text)
    (packages[0] / "new_module.py").write_text("X = 1\n")
    assert source_digest(packages) != original, "a new module in training/ must enter the key"


def test_a_code_edit_changes_the_key_and_a_validation_message_does_not(tmp_path):
    """End to end, in fresh processes: the key of one experiment under the checkout's code, under a copy whose
    Experiment validation message was reworded (same key), and under a copy whose loop changed (new key)."""
    copy_root = _tree_copy(tmp_path)
    original = _key_in(copy_root)
    experiment_py = copy_root / "trainer" / "experiment.py"
    text = experiment_py.read_text()
    assert "must be an integer >= 1" in text
    experiment_py.write_text(text.replace("must be an integer >= 1", "must be a whole number of at least 1"))
    assert _key_in(copy_root) == original, "rewording a validation message must keep every cache"
    loop_py = copy_root / "trainer" / "training" / "loop.py"
    loop_py.write_text(loop_py.read_text().replace("model.train()", "model.train()  # edited", 1))
    assert _key_in(copy_root) != original, "a change in the training loop must change the key"


@pytest.mark.parametrize("path, old, new", [
    ("experiment.py", "range(0, self.epochs + 1, self.eval_every)", "range(0, self.epochs + 1, self.eval_every or 1)"),
    ("experiment.py", 'return self.precision == "fp16-autocast" if', 'return self.precision in ("fp16-autocast",) if'),
    ("behavior.py", 'train=tuple(Example(**e) for e in doc["train"])',
     'train=tuple(Example(**e) for e in doc["train"][:])'),
])
def test_logic_outside_the_packages_that_decides_numbers_is_in_the_key(tmp_path, path, old, new):
    """Which epochs are probed, when the scaler is on, which rows are trained on: edited, the key moves."""
    copy_root = _tree_copy(tmp_path)
    original = _key_in(copy_root)
    module = copy_root / "trainer" / path
    assert old in module.read_text()
    module.write_text(module.read_text().replace(old, new))
    assert _key_in(copy_root) != original


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
