"""LoRA, selective unfreezing, per-layer diagnostics: cached and resumed like full fine-tuning (tiny models)."""

import pytest
from safetensors.torch import load_file
from tiny import TINY as TINY_MODEL_RUN

from trainer import ConfigError, Experiment
from trainer.cache.record import TopLayer
from trainer.experiment import LoRA, Unfreeze
from trainer.runs.obtain import obtain

TINY = {**TINY_MODEL_RUN, "lr": 1e-2, "generate": False}


def saved_tensors(run) -> dict:
    return load_file(f"{run.path}/{run.record.checkpoint}/model.safetensors")


def test_lora_checkpoint_holds_only_the_adapter_and_resumes_exactly(tmp_path, monkeypatch):
    exp = Experiment(epochs=2, method=LoRA(rank=4, alpha=8), **TINY)
    short = obtain(exp, progress=False)
    assert saved_tensors(short) and all("lora_" in name for name in saved_tensors(short))
    assert short.record.method.trainable_parameters == sum(t.numel() for t in saved_tensors(short).values())
    resumed = obtain(exp.with_epochs(4), progress=False)
    monkeypatch.setenv("FT_CACHE_DIR", str(tmp_path / "fresh"))
    straight = obtain(exp.with_epochs(4), progress=False)
    assert resumed.evaluation(4).margins == straight.evaluation(4).margins
    assert resumed.evaluation(4).margins != resumed.baseline.margins, "the adapter should move the model"


def test_surgical_lora_adapts_only_the_chosen_layers():
    run = obtain(Experiment(epochs=1, method=LoRA(rank=2, targets=("q_proj", "v_proj"), layers=(1,)), **TINY),
                 progress=False)
    assert run.record.method.trained_layers == [1]
    assert all(".layers.1." in name for name in saved_tensors(run))
    change = run.evaluation(1).layers.relative_change
    assert change[0] == 0 and change[1] > 0


def test_unfreezing_by_relative_depth_trains_only_that_layer():
    run = obtain(Experiment(epochs=2, method=Unfreeze((0.5,)), **TINY), progress=False)  # 2 layers: depth 0.5 = 1
    assert run.record.method.trained_layers == [1]
    assert all(name.startswith("model.layers.1.") for name in saved_tensors(run))
    change = run.evaluation(2).layers.relative_change
    assert change[0] == 0 and change[1] > 0
    assert run.evaluation(2).layers.top[0] == TopLayer(layer=1, depth=0.5, relative_change=change[1])


def test_full_fine_tuning_records_per_layer_gradients_and_changes():
    run = obtain(Experiment(epochs=2, **TINY), progress=False)
    assert all(len(entry.layer_grad_norms) == 2 and min(entry.layer_grad_norms) > 0 for entry in run.train_log)
    assert min(run.evaluation(2).layers.relative_change) > 0
    assert len(run.evaluation(2).layers.top) == 2  # top-3 of a 2-layer model


def test_a_layer_outside_the_model_names_the_valid_range():
    with pytest.raises(ConfigError, match=r"layer 7, outside tiny-llama's 2 decoder layers; use an index in 0\.\.1"):
        obtain(Experiment(epochs=1, method=Unfreeze((7,)), **TINY), progress=False)


def test_a_missing_target_module_lists_the_model_s_modules():
    with pytest.raises(ConfigError, match=r"'c_attn' is not a linear module of tiny-llama; its linear modules are "
                                          r"\['down_proj', 'gate_proj', 'k_proj'"):
        obtain(Experiment(epochs=1, method=LoRA(targets=("c_attn",)), **TINY), progress=False)


@pytest.mark.parametrize(("method", "message"), [
    (LoRA(rank=0), "LoRA rank=0: must be an integer >= 1"),
    (LoRA(targets=()), "LoRA targets=()"),
    (Unfreeze(()), "Unfreeze layers=()"),
    (Unfreeze((1.5,)), "1.5 is neither a layer index >= 0 nor a relative depth in (0, 1)"),
])
def test_bad_method_settings_are_named(method, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        Experiment(model="tiny-llama", method=method)


def test_a_lora_run_starts_the_same_whatever_the_process_drew_before(tmp_path, monkeypatch):
    """peft draws the adapters from torch's global generator: seeded per run, a replay or a second run in the same
    worker starts from the same adapters as the first."""
    import torch
    from tiny import save_tiny

    save_tiny(tmp_path / "model")  # loaded from a folder (a built tiny model seeds its own initialisation)
    exp = Experiment(epochs=1, method=LoRA(rank=4, alpha=8), **(TINY | {"model": str(tmp_path / "model")}))
    runs = []
    for draws in (0, 7):
        torch.rand(draws)  # another run, or an import, used the generator before this one
        monkeypatch.setenv("FT_CACHE_DIR", str(tmp_path / f"cache-{draws}"))
        runs.append(obtain(exp, progress=False).evaluation(1).margins)
    assert runs[0] == runs[1]
