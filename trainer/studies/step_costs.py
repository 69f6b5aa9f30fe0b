"""What a training step and a look cost, measured side by side in one process: ratios, not absolute times.

These machines are noisy and shared, so a performance finding compares things measured in the same run,
interleaved round by round (a slow moment hits every method alike), and asserts only the ratio. The
absolute seconds are kept for pytest-benchmark to save with the machine's description and compare
between runs without failing on them.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from trainer.experiment import Experiment, Method
from trainer.judgement import Judgement, judged


@dataclass(frozen=True)
class Costs:
    """Median seconds per step (or per look) of each named variant, measured in interleaved rounds."""

    what: str  # "training step" or "look"
    subject: str
    seconds: dict[str, list[float]]

    def median(self, name: str) -> float:
        return statistics.median(self.seconds[name])

    def ratio(self, slower: str, faster: str) -> float:
        return self.median(slower) / self.median(faster)

    def judge_faster(self, name: str, than: str, at_least: float) -> Judgement:
        """`name` takes at most 1/at_least of `than`'s time per step (medians of the same run)."""
        ratio = self.ratio(than, name)
        words = (f"{self.subject}: {name} {ratio:.2f}x faster than {than} per {self.what} (claimed at least "
                 f"{at_least:g}x): {self.median(name):.2f} s vs {self.median(than):.2f} s, medians of "
                 f"{len(self.seconds[name])} interleaved rounds: "
                 + "; ".join(f"{k} {[round(s, 2) for s in v]}" for k, v in self.seconds.items()))
        return judged(ratio >= at_least, words if ratio >= at_least else words + "\nA shared machine slows "
                      "rounds unevenly: rerun; if it holds, the claim's factor is too high for this machine")

    def as_dict(self) -> dict:
        return {"what": self.what, "subject": self.subject, "median_seconds":
                {k: round(self.median(k), 4) for k in self.seconds}, "seconds": self.seconds}


def interleaved(variants: dict[str, Callable[[], None]], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of each variant's call, round by round (after `warmup` untimed rounds)."""
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for round_index in range(warmup + rounds):
        for name, call in variants.items():
            started = time.perf_counter()
            call()
            if round_index >= warmup:
                seconds[name].append(time.perf_counter() - started)
    return seconds


def step_costs(model: str, methods: dict[str, Method], rounds: int = 4) -> Costs:
    """Seconds per training step of each method on `model` (the behavior's examples, one batch), each method
    on its own copy of the model, through the trainer's own loop."""
    variants = {name: training_step(Experiment(model=model, method=method, device="cpu", processes=1))[1]
                for name, method in methods.items()}
    return Costs("training step", model, interleaved(variants, rounds))


def look_costs(exp: Experiment, rounds: int = 1) -> Costs:
    """Seconds per look of the full probe (margins, KL, greedy answers) and of margins and KL alone."""
    from trainer.behavior import load_behavior
    from trainer.training.batches import PromptFormat
    from trainer.training.methods import load_base
    from trainer.training.probe import neutral_logprobs, probe_model

    loaded = load_base(exp, "cpu")
    behavior = load_behavior(exp.behavior)
    fmt = PromptFormat(loaded.prompt_style, behavior.prompt_template)
    base = neutral_logprobs(loaded.model, loaded.tokenizer, list(behavior.neutral_prompts))

    def look(generate: bool) -> Callable[[], None]:
        return lambda: probe_model(loaded.model, loaded.tokenizer, fmt, behavior, exp.gen_tokens, base, None,
                                   generate)

    return Costs("look", exp.model, interleaved({"with answers": look(True), "margins only": look(False)}, rounds))


def training_step(exp: Experiment, through_accelerate: bool = False) -> tuple[torch.nn.Module, Callable[[], None]]:
    """The model as `exp` trains it and a call that trains it one more epoch (the behavior's examples, through the
    trainer's own loop; `through_accelerate`: the model placed and wrapped by accelerate, as runs train)."""
    from trainer.behavior import load_behavior
    from trainer.training.batches import PromptFormat, training_examples
    from trainer.training.loop import epoch_batches, optimizer_for, train_one_epoch
    from trainer.training.methods import load_base, prepare
    from trainer.training.placement import accelerator_for, placed, precision_for

    exp = placed(exp)
    loaded = load_base(exp, exp.device)
    behavior = load_behavior(exp.behavior)
    fmt = PromptFormat(loaded.prompt_style, behavior.prompt_template)
    model = prepare(loaded.model, exp)
    optimizer = optimizer_for(model, exp)
    accelerator = accelerator_for(exp)
    precision = precision_for(accelerator, exp)
    trained = accelerator.prepare_model(model) if through_accelerate else model
    examples = training_examples(behavior, exp.data, exp.seed)
    epochs = iter(range(1, 10**6))

    def step() -> None:
        epoch = next(epochs)
        train_one_epoch(trained, optimizer, epoch_batches(loaded.tokenizer, fmt, examples, exp, epoch), exp, epoch,
                        precision, accelerator=accelerator if through_accelerate else None)

    step.optimizer = optimizer  # what a benchmark checkpoints beside the weights
    step.parameters = sum(p.numel() for p in model.parameters())  # tied weights once
    step.tokens = sum(int(batch["attention_mask"].sum()) for batch in epoch_batches(loaded.tokenizer, fmt, examples,
                                                                                    exp, 1))
    return model, step


def plan_costs(model: str, recipe: str = "fp32-adamw", rounds: int = 3) -> Costs:
    """Seconds per memory plan with an empty trace cache (tracing a 1- and a 2-layer step) and from the cache."""
    import tempfile

    from trainer import settings
    from trainer.memory.planner import plan

    def cold() -> None:
        with tempfile.TemporaryDirectory(prefix="ft-plan-") as empty:
            previous = settings.use(settings.active().replace(cache_dir=empty))
            try:
                plan(model, recipe)
            finally:
                settings.use(previous)

    return Costs("plan", model, interleaved({"traced": cold, "cached": lambda: plan(model, recipe)}, rounds))
