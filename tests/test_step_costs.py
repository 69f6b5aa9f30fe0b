"""Performance verdicts are ratios of times measured side by side; the rule itself, on known times."""

import pytest
from tiny import tiny

from trainer.errors import ExpectationMisuse
from trainer.experiment import Full, LoRA
from trainer.studies.step_costs import Costs, interleaved, look_costs, step_costs


def test_a_ratio_below_the_claim_does_not_hold_and_says_both_times():
    costs = Costs("training step", "m", {"lora": [1.0, 1.1, 0.9], "full": [1.2, 1.3, 1.2]})
    verdict = costs.judge_faster("lora", than="full", at_least=1.5)
    assert not verdict.holds
    assert "lora 1.20x faster than full per training step (claimed at least 1.5x): 1.00 s vs 1.20 s" in \
        verdict.explanation
    assert costs.judge_faster("lora", than="full", at_least=1.2).holds


def test_variants_are_timed_round_by_round_after_the_warmup():
    calls = []
    seconds = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=2, warmup=1)
    assert calls == ["a", "b"] * 3 and [len(v) for v in seconds.values()] == [2, 2]


def test_step_and_look_costs_run_the_trainer_s_own_code_on_a_tiny_model():
    steps = step_costs("tiny-llama", {"full": Full(), "lora": LoRA(rank=2)}, rounds=1)
    assert set(steps.seconds) == {"full", "lora"} and all(s > 0 for v in steps.seconds.values() for s in v)
    looks = look_costs(tiny(), rounds=1)
    assert set(looks.seconds) == {"with answers", "margins only"}


def test_training_time_is_measured_where_the_weights_are_and_projected_from_flops_elsewhere():
    from trainer.models.configs import parameter_count
    from trainer.models.sources import resolve_model
    from trainer.studies.training_time import training_times

    times = training_times(tiny(), ["tiny-llama", "tiny-qwen2", "phi-2"], rounds=1)
    measured, projected = [p for p in times.points if p.measured], times.of("phi-2")
    assert [p.model for p in measured] == ["tiny-llama", "tiny-qwen2"] and not projected.measured
    assert projected.parameters == parameter_count(resolve_model("phi-2").architecture())
    rates = [p.flops / p.seconds for p in measured]
    assert projected.low == pytest.approx(projected.flops / max(rates))
    assert projected.high == pytest.approx(projected.flops / min(rates))
    assert "projected from FLOPs, not measured" in projected.words()


def test_a_time_claim_holds_only_when_its_whole_range_is_in_the_unit():
    from trainer.studies.training_time import EpochTime, TrainingTimes

    times = TrainingTimes("recipe", (EpochTime("m", 10**9, 100, 600.0, 500.0, 700.0, False),), ())
    assert times.judge_takes("m", 10, "hours").holds  # 100 min (83 .. 117): all hours
    straddling = times.judge_takes("m", 6, "hours")  # 60 min (50 .. 70): straddles minutes and hours
    assert not straddling.holds and "which is hours; claimed: hours" in straddling.explanation
    assert not times.judge_takes("m", 10, "days").holds
    with pytest.raises(ExpectationMisuse, match=r"unit 'weeks': must be one of"):
        times.judge_takes("m", 1, "weeks")
    with pytest.raises(ExpectationMisuse, match=r"'phi-2' was not timed; timed: \['m'\]"):
        times.judge_takes("phi-2", 1, "days")


def test_training_time_needs_one_model_on_this_machine():
    from trainer.studies.training_time import training_times

    with pytest.raises(ExpectationMisuse, match="none of .*phi-2.* is on this machine"):
        training_times(tiny(), ["phi-2"])
