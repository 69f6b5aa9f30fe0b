"""Performance findings: ratios of times measured side by side in the same run (these machines are noisy),
through pytest-benchmark, which saves the absolute times with the machine's description
(`--benchmark-autosave`) and compares them between runs (`--benchmark-compare`) without failing on them."""

import pytest

from trainer.experiment import Experiment, Full, LoRA, Unfreeze
from trainer.studies.step_costs import look_costs, plan_costs, step_costs

NOTEBOOK_LORA = LoRA(rank=32, alpha=64, targets=("q_proj", "v_proj"))
METHODS = {"full": Full(), "lora-r32": NOTEBOOK_LORA, "unfreeze-2-layers": Unfreeze(layers=(0.54, 0.63))}


def measured(benchmark, study, *args):
    """One timed call of the study (its own rounds are interleaved inside); every figure goes in extra_info."""
    costs = benchmark.pedantic(study, args=args, rounds=1, iterations=1)
    benchmark.extra_info.update(costs.as_dict())
    return costs


@pytest.mark.slow
@pytest.mark.finding("LoRA r=32 trains at least 1.5x faster per step than full fine-tuning (SmolLM2)")
def test_lora_r32_trains_faster_per_step_than_full_finetuning(benchmark, expect_speed):
    expect_speed(measured(benchmark, step_costs, "smollm2-135m", METHODS)).faster("lora-r32", than="full",
                                                                                   at_least=1.5)


@pytest.mark.slow
@pytest.mark.finding("A margins-only look (generate=False) is at least 1.5x faster than a look with answers")
def test_a_margins_only_look_is_faster_than_a_full_look(benchmark, expect_speed):
    # Measured 2.2-2.4x on these machines (one round each); 1.5x leaves room for a shared machine's noise.
    costs = measured(benchmark, look_costs, Experiment(model="smollm2-135m"))
    expect_speed(costs).faster("margins only", than="with answers", at_least=1.5)


@pytest.mark.finding("A cached memory plan is at least 10x faster than tracing one")
def test_a_cached_plan_is_ten_times_faster_than_tracing(benchmark, expect_speed):
    expect_speed(measured(benchmark, plan_costs, "phi-2")).faster("cached", than="traced", at_least=10)
