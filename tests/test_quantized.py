"""A quantized frozen base under a LoRA adapter (QLoRA): it loads through transformers + bitsandbytes, trains
the adapter with gradients through the quantized layers, resumes exactly, and is keyed apart; bad requests name
the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny import save_tiny

from fixtures import plugin
from trainer import ConfigError, Experiment
from trainer.errors import LibraryMissing
from trainer.experiment import Full, LoRA
from trainer.models import quantized
from trainer.models.quantized import float_weight, is_quantized, load_quantized
from trainer.models.sources import load_folder
from trainer.runs import keys
from trainer.runs.obtain import obtain
from trainer.training.methods import apply_method

needs_bitsandbytes = pytest.mark.skipif(not quantized.bitsandbytes_installed(),
                                        reason="install it with `pip install -e '.[quant]'` (`make venv` does)")

ADAPTER = LoRA(rank=4, alpha=8, targets="all-linear")


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-folder")
    save_tiny(folder)
    return folder


def qlora(folder: Path, **fields) -> Experiment:
    return Experiment(**{"model": str(folder), "method": ADAPTER, "quantize": "nf4", "epochs": 2, "eval_every": 1,
                         "lr": 1e-3, "gen_tokens": 4, **fields})


@needs_bitsandbytes
@pytest.mark.parametrize("quantize, layer", [("nf4", "Linear4bit"), ("int8", "Linear8bitLt")])
def test_a_quantized_base_loads_its_linear_layers_quantized_and_close_to_the_weights(tiny_folder, quantize, layer):
    model = load_quantized(tiny_folder, quantize, "cpu")
    fp32, _ = load_folder(tiny_folder)
    originals = dict(fp32.named_modules())
    layers = [(name, m) for name, m in model.named_modules() if is_quantized(m)]
    assert layers and all(type(m).__name__ == layer for _, m in layers)
    assert not any(p.requires_grad for p in model.parameters()), "the quantized base must be frozen"
    for name, module in layers:
        weight, stored = originals[name].weight, float_weight(module).float()
        error = (stored - weight).norm() / weight.norm()
        assert error > 0.001, f"{name} is not quantized"
        if quantize == "nf4":  # exactly what QLoRA stores: NF4 blocks of 64, double-quantized scales
            import bitsandbytes.functional as bnb

            packed, state = bnb.quantize_4bit(weight.detach(), quant_type="nf4", compress_statistics=True)
            torch.testing.assert_close(stored, bnb.dequantize_4bit(packed, state), rtol=0, atol=0, msg=name)
        else:  # 255 levels per row
            assert error < 0.05, f"{name}: relative error {error:.3f}"


@needs_bitsandbytes
def test_adapter_gradients_pass_through_a_probed_quantized_base(tiny_folder):
    """After an eval-mode probe, training must still backpropagate through the quantized layers in fp32: the same
    gradients as an fp32 model holding the dequantized weights (bitsandbytes' repacked CPU kernel has no backward)."""
    base = load_quantized(tiny_folder, "nf4", "cpu")
    reference, _ = load_folder(tiny_folder)
    references = dict(reference.named_modules())
    with torch.no_grad():
        for name, module in base.named_modules():
            if is_quantized(module):
                references[name].weight.copy_(float_weight(module))
    models = []
    for model in (base, reference):
        torch.manual_seed(0)
        models.append(apply_method(model, ADAPTER, "tiny"))
    for model in models:  # peft starts B at zero; give every adapter a non-zero delta so gradients reach A too
        torch.manual_seed(1)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.data.normal_(0, 0.1)
    ids = torch.randint(0, 200, (2, 12))
    with torch.no_grad():
        models[0].eval()(input_ids=ids)  # a probe
    grads = []
    for model in models:
        model.train()
        model(input_ids=ids, labels=ids).loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name, grad in grads[0].items():
        torch.testing.assert_close(grad, grads[1][name], rtol=1e-3, atol=1e-6, msg=name)


@needs_bitsandbytes
def test_with_the_repacked_cpu_kernel_a_probe_would_break_training(tiny_folder):
    """The control for the test above: where bitsandbytes repacks for AVX512-BF16, leaving it on breaks training
    after a probe (on the tiny shapes it fails outright; on real ones the gradients go wrong)."""
    from bitsandbytes.functional import has_avx512bf16

    if not has_avx512bf16():
        pytest.skip("this CPU has no AVX512-BF16: bitsandbytes never repacks here, so there is nothing to turn off")
    model = apply_method(load_quantized(tiny_folder, "nf4", "cpu"), ADAPTER, "tiny")
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = True
    ids = torch.randint(0, 200, (2, 12))
    with pytest.raises(RuntimeError):
        with torch.no_grad():
            model.eval()(input_ids=ids)
        model.train()
        model(input_ids=ids, labels=ids).loss.backward()


@needs_bitsandbytes
def test_a_quantized_run_checkpoints_only_the_adapter_and_resumes_exactly(tiny_folder, tmp_path, monkeypatch):
    exp = qlora(tiny_folder)
    short = obtain(exp.with_epochs(1), progress=False)
    stored = load_file(str(Path(short.path) / short.record.checkpoint / "model.safetensors"))
    assert stored and all("lora_" in name for name in stored), sorted(stored)[:4]
    assert short.record.method.trainable_parameters == sum(t.numel() for t in stored.values())
    resumed = obtain(exp, progress=False)
    monkeypatch.setenv("FT_CACHE_DIR", str(tmp_path / "fresh"))
    straight = obtain(exp, progress=False)
    assert resumed.evaluation(2).margins == straight.evaluation(2).margins
    assert resumed.evaluation(2).margins != resumed.baseline.margins, "the adapter should move the model"


@needs_bitsandbytes
def test_a_quantized_base_is_keyed_apart_and_is_its_own_epoch_0(tiny_folder):
    plain, nf4, int8 = (qlora(tiny_folder, quantize=q) for q in (None, "nf4", "int8"))
    assert "quantize" not in plain.key_fields(), "runs keyed before quantize existed keep their keys"
    assert len({keys.experiment_key(e) for e in (plain, nf4, int8)}) == 3
    baselines = {keys.baseline_key(keys.key_components(e)) for e in (plain, nf4, int8, nf4.control())}
    assert len(baselines) == 3, "a run and its control share the quantized baseline; each storage has its own"
    assert "bitsandbytes" in keys.key_components(nf4) and "bitsandbytes" not in keys.key_components(plain)


@pytest.mark.parametrize("fields, message", [
    ({"method": Full()}, "a quantized base cannot train; use method=LoRA"),
    ({"precision": "fp16"}, "use precision='fp32'"),
    ({"offload": "fsdp2"}, "use offload=None"),
    ({"optimizer": "sgd"}, "use optimizer='adamw'"),
    ({"quantize": "int4"}, "must be one of [None, 'nf4', 'int8']"),
])
def test_a_quantized_request_that_cannot_train_names_the_fix(tiny_folder, fields, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        qlora(tiny_folder, **fields)


def test_a_model_built_in_memory_cannot_be_quantized_and_says_which_can():
    exp = Experiment(model="tiny-llama", method=ADAPTER, quantize="nf4", epochs=1, gen_tokens=4)
    with pytest.raises(ConfigError, match="built in memory.*smollm2-135m"):
        obtain(exp, progress=False)


def test_without_bitsandbytes_a_quantized_request_says_how_to_install_it_and_a_finding_skips(monkeypatch, tmp_path):
    import importlib.metadata

    real_version = importlib.metadata.version

    def version(name):
        if name == "bitsandbytes":
            raise importlib.metadata.PackageNotFoundError(name)
        return real_version(name)

    save_tiny(tmp_path)
    monkeypatch.setattr(quantized, "bitsandbytes_installed", lambda: False)
    monkeypatch.setattr(importlib.metadata, "version", version)  # as where it was never installed
    with pytest.raises(LibraryMissing, match=r"pip install -e '\.\[quant\]'"):
        obtain(qlora(tmp_path), progress=False)
    with pytest.raises(pytest.skip.Exception, match="needs bitsandbytes"):
        plugin._skip_unless_runnable(qlora(tmp_path))


@needs_bitsandbytes
@pytest.mark.parametrize("device, processes, message", [
    ("mps", 1, "device='mps': bitsandbytes trains a quantized base on \\['cuda', 'cpu'\\]"),
    ("cpu", 2, "processes=2: a quantized base trains in one process here"),
])
def test_a_device_or_process_count_a_quantized_base_cannot_train_in_is_refused_with_the_fix(device, processes,
                                                                                             message):
    with pytest.raises(ConfigError, match=message):
        quantized.check_quantizable("nf4", device, processes)


@needs_bitsandbytes
def test_an_int8_base_trains_its_adapter(tiny_folder):
    run = obtain(qlora(tiny_folder, quantize="int8", epochs=1), progress=False)
    assert run.record.stopped is None and not run.record.train_log[0].nonfinite
    assert run.evaluation(1).margins != run.baseline.margins, "the adapter should move the model"
