"""Performance verdicts are ratios of times measured side by side; the rule itself, on known times."""

from tiny import tiny

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
