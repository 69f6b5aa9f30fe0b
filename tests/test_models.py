import pytest
import torch
from tiny import save_tiny, tiny

from trainer import Experiment, UnknownModelError, WeightsMissing
from trainer.errors import ConfigError, UnsafeWeightsError
from trainer.models.sources import REGISTRY, resolve_model


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-qwen2", "tiny-phi"])
def test_tiny_models_load_and_run_a_forward_pass(name):
    loaded = resolve_model(name).load()
    ids = loaded.tokenizer("hello", return_tensors="pt")["input_ids"]
    logits = loaded.model(input_ids=ids).logits
    assert logits.shape == (1, ids.shape[1], len(loaded.tokenizer))
    assert torch.isfinite(logits).all()


def test_unknown_name_lists_the_registry():
    with pytest.raises(UnknownModelError) as info:
        resolve_model("llama-9000")
    assert all(name in str(info.value) for name in REGISTRY)


def test_any_local_folder_is_usable_by_path(tmp_path):
    original = save_tiny(tmp_path / "my-model")
    source = resolve_model(str(tmp_path / "my-model"))
    reloaded = source.load()
    for (name, a), (_, b) in zip(original.model.state_dict().items(), reloaded.model.state_dict().items()):
        assert torch.equal(a, b), name
    Experiment(model=str(tmp_path / "my-model"))  # validates


def test_folder_fingerprint_follows_the_weights(tmp_path):
    save_tiny(tmp_path / "m")
    before = resolve_model(str(tmp_path / "m")).fingerprint()
    from safetensors.torch import load_file, save_file

    weights = tmp_path / "m" / "model.safetensors"
    tensors = load_file(str(weights))
    first = next(iter(tensors))
    tensors[first] = tensors[first] + 1
    save_file(tensors, str(weights), metadata={"format": "pt"})
    assert resolve_model(str(tmp_path / "m")).fingerprint() != before


def test_hub_model_without_weights_skips_with_instructions(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf"))
    with pytest.raises(WeightsMissing) as info:
        REGISTRY["phi-2"].check_available()
    message = str(info.value)
    assert "microsoft/phi-2" in message and "--ft-model-dir" in message and "huggingface-cli download" in message


def test_hub_model_found_in_model_dir(monkeypatch, tmp_path):
    save_tiny(tmp_path / "models" / "microsoft--phi-2")
    monkeypatch.setenv("FT_MODEL_DIR", str(tmp_path / "models"))
    source = REGISTRY["phi-2"]
    source.check_available()
    assert source.load().model.config.model_type == "qwen2"  # it is whatever the folder holds


def test_folder_without_weights_is_a_clear_error(tmp_path):
    save_tiny(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match="no \\*.safetensors"):
        resolve_model(str(tmp_path / "m")).check_available()


def test_pickle_only_folder_is_refused(tmp_path):
    save_tiny(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").unlink()
    (tmp_path / "m" / "pytorch_model.bin").write_bytes(b"\x80\x04planted pickle")
    with pytest.raises(UnsafeWeightsError, match="safetensors only"):
        resolve_model(str(tmp_path / "m")).load()


def test_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="config.json"):
        resolve_model(str(tmp_path))


def test_size_ladder_keeps_the_first_layers_and_the_tail_and_still_generates():
    from trainer.models.sources import LayerSubset

    assert LayerSubset("x", base="smollm2-135m", keep=22).kept_layers(30) == [*range(5), *range(13, 30)]
    assert LayerSubset("x", base="smollm2-135m", keep=3).kept_layers(30) == [0, 1, 2]
    with pytest.raises(ConfigError, match="keep=31: must be in"):
        LayerSubset("x", base="smollm2-135m", keep=31).kept_layers(30)
    small = LayerSubset("tiny-1l", base="tiny-llama", keep=1, head=0)
    loaded = small.load()
    assert len(loaded.model.model.layers) == 1 and loaded.model.config.num_hidden_layers == 1
    out = loaded.model.generate(**loaded.tokenizer(["ab"], return_tensors="pt"), max_new_tokens=3, do_sample=False)
    assert out.shape[1] > 3
    assert small.fingerprint() != REGISTRY["tiny-llama"].fingerprint()


class _Payload:
    """A pickle that, if it were ever unpickled, would leave a marker file behind."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_planted_beside_safetensors_is_never_unpickled(tmp_path, capsys):
    import pickle

    marker = tmp_path / "unpickled"
    save_tiny(tmp_path / "m")
    for name in ("pytorch_model.bin", "training_args.bin", "optimizer.pt"):
        (tmp_path / "m" / name).write_bytes(pickle.dumps(_Payload(marker)))
    resolve_model(str(tmp_path / "m")).load()
    assert not marker.exists()
    assert "also holds pickle files ['optimizer.pt', 'pytorch_model.bin', 'training_args.bin']; they are never " \
           "loaded" in capsys.readouterr().err


def test_a_pickle_planted_in_a_cached_checkpoint_is_refused_and_never_unpickled(tmp_path, private_cache, capsys):
    import pickle
    from pathlib import Path

    from trainer.runs.obtain import obtain

    marker = tmp_path / "unpickled"
    experiment = tiny(epochs=1)
    run = obtain(experiment, progress=False)
    checkpoint = Path(run.path) / run.record.checkpoint
    for name in ("optimizer.pt", "model.bin", "rng_state.pth"):
        (checkpoint / name).write_bytes(pickle.dumps(_Payload(marker)))
    resumed = obtain(experiment.with_epochs(2), progress=False)
    assert "holds ['model.bin', 'optimizer.pt', 'rng_state.pth'], which its manifest does not list" in \
           capsys.readouterr().err  # refused: retrained from epoch 0 rather than resumed from it
    assert resumed.record.epochs_done == 2 and [e.epoch for e in resumed.train_log] == [1, 2]
    assert not marker.exists()


def test_the_suite_forces_the_hugging_face_libraries_offline():
    import os
    import subprocess
    import sys

    probe = ("import trainer, huggingface_hub.constants as c, transformers.utils.hub as h; "
             "print(c.HF_HUB_OFFLINE, h.is_offline_mode())")
    env = os.environ | {"HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0"}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert done.stdout.split() == ["True", "True"], done.stderr


@pytest.mark.parametrize("folder_name, asked", [
    ("acme--tiny-chat", "acme/tiny-chat"), ("acme/tiny-chat", "acme/tiny-chat"), ("tiny-chat", "tiny-chat"),
    ("acme--tiny-chat", "acme--tiny-chat")])
def test_a_model_folder_s_model_is_found_by_its_name(monkeypatch, tmp_path, folder_name, asked):
    save_tiny(tmp_path / "models" / folder_name)
    monkeypatch.setenv("FT_MODEL_DIR", str(tmp_path / "models"))
    source = resolve_model(asked)
    assert source.path == str((tmp_path / "models" / folder_name).resolve())
    exp = Experiment(model=asked, epochs=1, lr=1e-3, gen_tokens=4)
    from trainer.runs.obtain import obtain

    assert obtain(exp, progress=False).record.model.name == asked


def test_a_name_no_model_folder_holds_says_where_it_looked(monkeypatch, tmp_path):
    monkeypatch.setenv("FT_MODEL_DIR", str(tmp_path))
    with pytest.raises(UnknownModelError, match=r"acme--tiny-chat', 'acme/tiny-chat', 'tiny-chat'"):
        resolve_model("acme/tiny-chat")
    monkeypatch.delenv("FT_MODEL_DIR")
    with pytest.raises(UnknownModelError, match=r"set \$FT_MODEL_DIR / --ft-model-dir"):
        resolve_model("acme/tiny-chat")


def test_the_models_command_lists_model_folders_with_their_parameter_counts(monkeypatch, tmp_path, capsys):
    loaded = save_tiny(tmp_path / "acme--tiny-chat")
    monkeypatch.setenv("FT_MODEL_DIR", str(tmp_path))
    from trainer.__main__ import list_models

    list_models()
    line = next(row for row in capsys.readouterr().out.splitlines() if row.startswith("acme/tiny-chat"))
    stored = sum(p.numel() for p in loaded.model.state_dict().values())  # tied weights stored once
    assert f"{stored:,}" in line
