"""Where a run trains: the device chosen at run time, checked against the machine, named in the record and the key."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from tiny import tiny

from trainer import settings
from trainer.errors import ConfigError
from trainer.runs.keys import baseline_key, experiment_key, key_components
from trainer.runs.obtain import obtain
from trainer.training import placement


def test_auto_is_the_best_device_this_machine_has():
    assert placement.placed(tiny()).device == placement.available_devices()[0]
    assert placement.available_devices()[-1] == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA; the refusal needs one without")
def test_cuda_where_there_is_none_is_an_error_not_a_cpu_run():
    with pytest.raises(ConfigError, match=r"(?s)device='cuda'.*no cuda device.*use device='auto' or 'cpu'"):
        placement.placed(tiny(device="cuda"))
    with pytest.raises(ConfigError, match=r"--ft-device='cuda'"):
        placement.placed(tiny(), settings.Settings(device="cuda"))


def test_the_experiment_s_own_device_wins_over_the_option_and_auto_follows_it():
    chosen = settings.Settings(device="cpu", processes=2)
    assert placement.placed(tiny(), chosen).device == "cpu"
    assert placement.placed(tiny(), chosen).processes == 2
    assert placement.placed(tiny(processes=1), chosen).processes == 1


def test_unknown_devices_and_impossible_process_counts_are_refused_with_the_fix():
    with pytest.raises(ConfigError, match=r"device='tpu': must be one of \['auto', 'cpu', 'cuda', 'mps'\]"):
        tiny(device="tpu")
    with pytest.raises(ConfigError, match=r"processes=0: must be an integer >= 1"):
        tiny(processes=0)
    cores = placement.device_slots("cpu")
    with pytest.raises(ConfigError, match=rf"(?s)processes={cores + 1} > {cores} cores.*use processes <= {cores}"):
        placement.placed(tiny(device="cpu", processes=cores + 1, batch_size=64))
    with pytest.raises(ConfigError, match=r"(?s)processes=2 > batch_size=1: every process needs at least one example"):
        placement.placed(tiny(device="cpu", processes=2, batch_size=1))
    with pytest.raises(ValueError, match=r"\$FT_PROCESSES='two': must be a whole number >= 1"):
        _env_processes("two")


def _env_processes(value: str) -> int:
    import os

    os.environ[settings.PROCESSES_ENV] = value
    try:
        return settings.Settings().process_count()
    finally:
        del os.environ[settings.PROCESSES_ENV]


def test_the_device_kind_and_process_count_are_part_of_the_key():
    cpu = placement.placed(tiny(device="cpu"))
    gpu = dataclasses.replace(cpu, device="cuda")  # as a GPU machine would place it (no GPU needed to key it)
    assert experiment_key(cpu) != experiment_key(gpu)
    assert baseline_key(key_components(cpu)) != baseline_key(key_components(gpu))  # epoch 0 is measured there too
    assert experiment_key(cpu) != experiment_key(dataclasses.replace(cpu, processes=2))
    assert baseline_key(key_components(cpu)) == baseline_key(key_components(dataclasses.replace(cpu, processes=2)))
    assert experiment_key(tiny()) == experiment_key(placement.placed(tiny()))  # "auto" keys as what it resolves to


def test_the_record_names_where_the_run_trained():
    record = obtain(tiny(epochs=1, device="cpu"), progress=False).record
    where = record.placement
    assert (where.device, where.processes, where.backend, where.torch) == ("cpu", 1, None, torch.__version__)
    assert record.experiment["device"] == "cpu" and record.experiment["processes"] == 1


def test_bf16_autocast_comes_from_accelerate_and_probes_read_the_weights_without_it():
    exp = placement.placed(tiny(device="cpu", precision="bf16-autocast"))
    accelerator = placement.accelerator_for(exp)
    model = accelerator.prepare_model(torch.nn.Linear(4, 4))
    assert placement.precision_for(accelerator, exp).by == "accelerate"
    x = torch.randn(2, 4)
    assert model(x).dtype == torch.float32 and not torch.equal(model(x), model._original_forward(x))
    with placement.weights_as_they_are(model):
        assert torch.equal(model(x), torch.nn.functional.linear(x, model.weight, model.bias))
    assert not torch.equal(model(x), torch.nn.functional.linear(x, model.weight, model.bias))  # autocast again


def test_fp16_autocast_on_a_cpu_autocasts_through_torch_because_accelerate_cannot():
    exp = placement.placed(tiny(device="cpu", precision="fp16-autocast"))
    precision = placement.precision_for(placement.accelerator_for(exp), exp)
    assert precision.by == "torch" and precision.scaler.is_enabled()
    with precision.autocast():
        assert torch.nn.functional.linear(torch.randn(2, 4), torch.randn(4, 4)).dtype == torch.float16
