"""The memory planner: budgets, bundled architectures, traced events extended to full depth, measured peaks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from trainer.errors import ConfigError
from trainer.experiment import Experiment, Full, LoRA, Unfreeze
from trainer.memory import planner as memory
from trainer.memory.measure import measure
from trainer.memory.planner import plan
from trainer.memory.recipes import RECIPES, recipe_named
from trainer.memory.trace import trace_step
from trainer.models import configs as model_configs
from trainer.models.sources import REGISTRY
from trainer.units import format_bytes, parse_bytes

PUBLISHED = {"phi-2": 2_779_683_840, "phi-1.5": 1_418_270_720, "qwen2-0.5b": 494_032_768,
             "smollm2-135m": 134_515_008, "gemma3-270m": 268_098_176}


@pytest.mark.parametrize("text, size", [
    ("15 GB", 15 * 10**9), ("15GB", 15 * 10**9), ("15GiB", 15 * 2**30), ("15360MiB", 15 * 2**30),
    ("1.5 GiB", int(1.5 * 2**30)), ("512", 512), (2048, 2048)])
def test_budget_strings_parse(text, size):
    assert parse_bytes(text) == size


@pytest.mark.parametrize("text", ["fifteen", "15 GQ", "", "GiB", "-1GiB", "0GB", 0, -5])
def test_budget_strings_that_do_not_parse_are_named_with_the_fix(text):
    with pytest.raises(ConfigError) as error:
        parse_bytes(text)
    assert repr(text) in str(error.value)


def test_bytes_print_in_binary_units():
    assert format_bytes(15 * 2**30) == "15.00 GiB"
    assert format_bytes(3 * 2**20) == "3.00 MiB"


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_bundled_configs_give_the_published_parameter_counts_exactly(name):
    config = model_configs.load_config(model_configs.bundled_folder(name))
    assert model_configs.parameter_count(config) == PUBLISHED[name]


def test_unknown_recipe_lists_the_choices():
    with pytest.raises(ConfigError, match="fp32-adamw"):
        recipe_named("fp64-lion")


@pytest.mark.parametrize("field, value", [("offload", "disk"), ("optimizer", "lion"), ("checkpointing", "yes")])
def test_memory_fields_of_an_experiment_are_validated(field, value):
    with pytest.raises(ConfigError, match=f"{field}={value!r}"):
        Experiment(model="tiny-llama", **{field: value})


@pytest.mark.parametrize("method", [LoRA(rank=4), LoRA(rank=2, targets=("q_proj",)), Full()])
def test_the_planner_reads_the_experiment_a_finding_trains(method):
    """One vocabulary: the plan of an Experiment counts the very parameters its training run trains."""
    from trainer.runs.obtain import obtain

    experiment = Experiment(model="tiny-llama", method=method, epochs=1, gen_tokens=2, lr=1e-3)
    planned = memory.plan(experiment, batch=2, seq=16, device="cpu")
    assert planned.trainable == obtain(experiment, progress=False).record.method.trainable_parameters
    assert planned.recipe == memory.plan(experiment.with_seed(3), batch=2, seq=16, device="cpu").recipe


@pytest.mark.parametrize("method", [Unfreeze((1,)), LoRA(rank=2, layers=(0,))])
def test_a_method_on_chosen_layers_is_refused_by_the_planner_with_what_to_do(method):
    with pytest.raises(ConfigError, match="trains chosen layers only"):
        memory.plan(Experiment(model="tiny-llama", method=method), batch=2, seq=16)


def test_a_recipe_is_an_experiment_and_names_itself():
    experiment = RECIPES["lora-fp16"].experiment("tiny-llama")
    assert experiment.precision == "fp16" and experiment.method.rank == 32
    assert memory.plan(experiment, batch=2, seq=16).recipe == "lora-fp16"
    assert memory.plan(Experiment(model="tiny-llama", optimizer="sgd", checkpointing=True), batch=2,
                       seq=16).recipe == "full/fp32/sgd/recomputed"


@pytest.mark.parametrize("batch, seq", [(-1, 128), (5, 0), (5, -128), (2.5, 128)])
def test_negative_or_fractional_batch_and_sequence_are_refused(batch, seq):
    with pytest.raises(ConfigError, match="must be an integer >= 1"):
        memory.plan("tiny-llama", batch=batch, seq=seq)


def test_offload_on_a_cpu_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match="device='cuda'"):
        memory.plan("tiny-llama", "fp32-offload", device="cpu")


def test_a_model_without_a_bundled_architecture_names_where_to_add_one():
    from trainer.models.sources import HubModel

    with pytest.raises(ConfigError, match="trainer/models/configs/some-model/config.json"):
        HubModel("some-model", repo_id="org/some-model").architecture()


@pytest.mark.parametrize("recipe", ["fp32-adamw", "lora-fp32", "grad-checkpointing", "fp32-offload-streaming",
                                    "amp-bf16"])
def test_events_traced_at_one_and_two_layers_extend_exactly_to_full_depth(recipe):
    """The planner's central claim, against a real (not fake) trace of a 5-layer model."""
    config = model_configs.with_layers(_tiny_config(), 5)
    experiment = RECIPES[recipe].experiment("tiny-llama")
    planned = memory.traced_at_depth(config, experiment, batch=3, seq=24, foreach=False)
    real = trace_step(config, experiment, batch=3, seq=24, fake=False)
    assert planned["full"].peak.total == pytest.approx(real.peak.total, rel=0.02)
    assert planned["full"].trainable == real.trainable


def test_adamw_state_is_twice_the_trained_parameters_in_a_real_run():
    measured = measure("tiny-llama", "fp32-adamw", batch=2, seq=16)
    assert measured.out_of_memory is None and measured.peak_bytes > 0
    assert measured.optimizer_to_parameters == pytest.approx(2.0, rel=1e-3)  # + a step counter per tensor


def test_measurements_are_kept_and_a_damaged_one_is_measured_again(monkeypatch):
    first = measure("tiny-qwen2", "sgd", batch=2, seq=16)
    for entry in (memory.store.cache_root() / "memory-measurements").glob("*.json"):
        entry.write_text("[truncated")
    again = measure("tiny-qwen2", "sgd", batch=2, seq=16)
    assert again.optimizer_state_bytes == first.optimizer_state_bytes == 0
    monkeypatch.setattr("trainer.memory.measure._measure_in_fresh_process", _no_tracing)
    assert measure("tiny-qwen2", "sgd", batch=2, seq=16) == again


def test_running_out_of_memory_is_a_result_not_a_crash():
    # Big enough that its logits (2 MiB) need fresh address space, which the 1 MiB cap refuses.
    measured = measure("tiny-llama", "fp32-adamw", batch=8, seq=256, limit="1MiB")
    assert measured.peak_bytes is None
    assert "memory" in measured.out_of_memory.lower()


def test_plan_parts_add_up_and_budgets_decide_fits():
    plan = memory.plan("tiny-llama", "fp32-adamw", batch=2, seq=16, device="cuda")
    assert plan.device_total == sum(plan.device_parts.values())
    assert set(plan.device_parts) == set(memory.PARTS)
    assert plan.fits("1GiB")
    assert not plan.fits(plan.device_total - 1)
    assert "weights" in plan.table() and "tiny-llama" in plan.describe()


def test_offload_moves_optimizer_state_to_the_host():
    on_device = memory.plan("tiny-llama", "fp32-adamw", batch=2, seq=16)
    offloaded = memory.plan("tiny-llama", "fp32-offload-streaming", batch=2, seq=16)
    assert offloaded.device_parts["optimizer"] == 0
    assert offloaded.host_parts["optimizer"] == 8 * offloaded.trainable
    assert offloaded.device_total < on_device.device_total


@pytest.mark.parametrize("damage", [lambda text: "{not json",
                                    lambda text: text.replace('"trainable": ', '"trainable": 9', 1)])
def test_plans_are_cached_and_a_damaged_cache_entry_is_traced_again(monkeypatch, damage, capsys):
    first = memory.plan("tiny-qwen2", "sgd", batch=2, seq=16)
    for entry in (memory.store.cache_root() / "memory-traces").glob("*.json"):
        entry.write_text(damage(entry.read_text()))  # still valid JSON in the second case: the checksum catches it
    again = memory.plan("tiny-qwen2", "sgd", batch=2, seq=16)
    assert again == first
    assert "does not match its checksum" in capsys.readouterr().err
    monkeypatch.setattr(memory, "trace_step", _no_tracing)
    assert memory.plan("tiny-qwen2", "sgd", batch=2, seq=16) == first


def _no_tracing(*args, **kwargs):
    raise AssertionError("traced although the cache holds this trace")


def test_plan_command_prints_the_recipes_asked_for_and_the_verdict():
    done = _cli("plan", "tiny-llama", "--budget", "1MiB", "--batch", "2", "--seq", "16",
                "--recipe", "fp32-adamw", "--recipe", "lora-fp16")
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines() if line.split()[0] in RECIPES}
    assert set(rows) == {"fp32-adamw", "lora-fp16"}
    assert all(row.endswith("NO") for row in rows.values())  # the CUDA context alone is 512 MiB


def test_plan_command_names_a_recipe_the_model_cannot_take_and_goes_on():
    done = _cli("plan", "gemma3-270m", "--recipe", "amp-fp16", "--recipe", "sgd", "--batch", "1", "--seq", "8")
    assert done.returncode == 0, done.stderr
    assert "amp-fp16" in done.stdout and "not planned" in done.stdout and "overflows in fp16" in done.stdout
    assert any(line.startswith("sgd ") for line in done.stdout.splitlines())


def test_plan_command_refuses_a_budget_it_cannot_read():
    done = _cli("plan", "tiny-llama", "--budget", "fifteen")
    assert done.returncode == 2
    assert "'fifteen'" in done.stderr and "15GiB" in done.stderr


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainer", *args], capture_output=True, text=True, timeout=300)


def _tiny_config():
    from trainer.models.sources import REGISTRY

    return REGISTRY["tiny-llama"].architecture()


def test_plan_serialises_for_reports():
    data = memory.plan("tiny-llama", batch=2, seq=16).as_dict()
    assert json.loads(json.dumps(data))["recipe"] == "fp32-adamw"


# DeepSpeed 0.19's estimators, as published (deepspeed/runtime/zero/stage_1_and_2.py and stage3.py); the
# planner's figures are built from byte counts (trainer.memory.zero) and must agree with them.
def deepspeed_zero2(total_params, num_gpus_per_node=1, num_nodes=1, cpu_offload=True, additional_buffer_factor=1.5):
    total_gpus = num_nodes * num_gpus_per_node
    if cpu_offload:
        gpu_mem = 2 * total_params
        cpu_mem = total_params * max(4 * total_gpus, 16) * additional_buffer_factor
    else:
        gpu_mem = 4 * total_params + int(16 * total_params / total_gpus)
        cpu_mem = total_params * 4 * num_gpus_per_node * additional_buffer_factor
    return int(cpu_mem), int(gpu_mem)


def deepspeed_zero3(total_params, largest_layer_params, num_gpus_per_node=1, num_nodes=1, cpu_offload=True,
                    cpu_offload_params=True, zero_init=True, additional_buffer_factor=1.5):
    total_gpus = num_nodes * num_gpus_per_node
    gpus_factor = 1 / num_nodes
    largest_layer_memory = (4 * largest_layer_params)
    if cpu_offload:
        if cpu_offload_params:
            gpu_mem = largest_layer_memory
            if zero_init:
                cpu_mem = total_params * 18 * gpus_factor * additional_buffer_factor
            else:
                cpu_mem = total_params * max(4 * num_gpus_per_node, 18 * gpus_factor) * additional_buffer_factor
        else:
            gpu_mem = largest_layer_memory + int(2 * total_params / total_gpus)
            if zero_init:
                cpu_mem = total_params * 16 * gpus_factor * additional_buffer_factor
            else:
                cpu_mem = total_params * max(4 * num_gpus_per_node, 16 * gpus_factor) * additional_buffer_factor
    else:
        gpu_mem = largest_layer_memory + int(18 * total_params / total_gpus)
        if zero_init:
            cpu_mem = largest_layer_params * 4 * num_gpus_per_node * additional_buffer_factor
        else:
            cpu_mem = total_params * 4 * num_gpus_per_node * additional_buffer_factor
    return int(cpu_mem), int(gpu_mem), largest_layer_memory


SIZES = [(2_779_683_840, 131_123_200), (494_032_768, 136_134_656), (1_418_270_720, 131_123_200), (10**6, 77_777)]
GRIDS = [(g, n) for g in (1, 2, 4, 8) for n in (1, 2, 3)]


@pytest.mark.parametrize("parameters, largest", SIZES)
def test_the_16_bit_zero_figures_agree_with_deepspeed_s_estimators(parameters, largest):
    from trainer.memory import zero

    for gpus, nodes in GRIDS:
        for offload in (True, False):
            ours = zero.zero2(parameters, gpus, nodes, offload_optimizer=offload)
            assert (ours.host, ours.gpu) == deepspeed_zero2(parameters, gpus, nodes, offload), (gpus, nodes, offload)
        for offload, offload_params in ((True, True), (True, False), (False, False)):
            for zero_init in (True, False):
                ours = zero.zero3(parameters, largest, gpus, nodes, offload, offload_params, zero_init)
                theirs = deepspeed_zero3(parameters, largest, gpus, nodes, offload, offload_params, zero_init)
                assert (ours.host, ours.gpu) == theirs[:2], (gpus, nodes, offload, offload_params, zero_init)


def test_the_plan_command_prints_the_parameter_count_and_the_model_state_bytes(capsys):
    from trainer.memory.planner import model_states
    from trainer.models import configs

    config = REGISTRY["phi-2"].architecture()
    count = configs.parameter_count(config)
    lines = model_states("phi-2")
    assert lines[0].startswith(f"{count:,} parameters")
    assert format_bytes(16 * count) in lines[1]  # 41.42 GiB: 16 B per parameter in fp32 with AdamW


def test_the_fsdp2_offload_plan_keeps_the_states_on_the_host_and_a_few_layers_on_the_device():
    from trainer.models import configs

    sharded = plan("phi-2", "fp32-offload-fsdp2")
    whole = plan("phi-2", "fp32-adamw")
    layer, outside = configs.decoder_layer_parameters(REGISTRY["phi-2"].architecture())
    assert sharded.host_total == 16 * sharded.parameters
    assert sharded.device_parts["weights"] == 4 * (outside + 2 * layer)
    assert sharded.device_parts["optimizer"] == 0
    assert sharded.fits("15GiB") and not whole.fits("15GiB")


def test_the_fsdp2_offload_recipe_measures_a_real_sharded_step_on_this_cpu():
    """The code path of the Phi-2 measurement under a CUDA cap (behaviors/test_memory.py), run here on a CPU:
    training's sharding and optimizer in a fresh process (a process group of one), two real steps."""
    measured = measure("tiny-llama", "fp32-offload-fsdp2", batch=2, seq=16, device="cpu", cached=False)
    assert measured.out_of_memory is None and measured.peak_bytes > 0
    assert measured.recipe == "fp32-offload-fsdp2"
    assert 2 * measured.trainable_bytes <= measured.optimizer_state_bytes <= 2.05 * measured.trainable_bytes


@pytest.mark.parametrize("quantize", ["nf4", "int8"])
def test_a_quantized_base_is_planned_at_the_bytes_bitsandbytes_stores(tmp_path, quantize):
    """The plan's weights for an adapter on a quantized base, against the tensors a real quantized load holds."""
    pytest.importorskip("bitsandbytes", reason="install it with `pip install -e '.[quant]'`")
    from tiny import save_tiny

    from trainer.models.quantized import is_quantized, load_quantized

    save_tiny(tmp_path)
    adapter = LoRA(rank=4, alpha=8, targets="all-linear")
    planned = {q: memory.plan(Experiment(model=str(tmp_path), method=adapter, quantize=q), batch=2, seq=16)
               for q in (None, quantize)}
    stored = fp32 = 0
    for module in load_quantized(tmp_path, quantize, "cpu").modules():
        if is_quantized(module):
            weight = module.weight
            fp32 += 4 * module.in_features * module.out_features
            stored += weight.numel() * weight.element_size() + _scale_bytes(weight, quantize)
    saved = planned[None].device_parts["weights"] - planned[quantize].device_parts["weights"]
    assert saved == pytest.approx(fp32 - stored, rel=0.01)
    assert "bitsandbytes' layout" in planned[quantize].table()


def _scale_bytes(weight, quantize: str) -> int:
    if quantize == "int8":
        return weight.SCB.numel() * weight.SCB.element_size()
    state = weight.quant_state
    nested = state.state2.absmax.numel() * state.state2.absmax.element_size() if state.nested else 0
    return state.absmax.numel() * state.absmax.element_size() + nested


def test_a_quantized_base_is_planned_not_measured():
    with pytest.raises(ConfigError, match="plan it"):
        measure(Experiment(model="tiny-llama", method=LoRA(rank=4, alpha=8), quantize="nf4"))
