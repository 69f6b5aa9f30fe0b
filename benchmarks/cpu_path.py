"""Time per epoch on a CPU: the loop through accelerate vs the same loop without it vs Hugging Face `Trainer`.

One recipe for all three (the notebook's: SmolLM2-135M, full fine-tuning, fp32 AdamW, lr 1e-5, constant,
gradient clipping at 1.0, the behavior's 5 examples in one batch of 5), trained for `--epochs` epochs from
the same pretrained weights, in rounds that alternate the three so drift on a shared machine hits them
alike. Probing is left out: it is the same code whoever trains.

  accelerate: what runs train through now (Accelerator, prepare_model, its clip, trainer.training.loop)
  bare:       the same loop with no Accelerator (what runs trained through before; torch's clip)
  hf-trainer: transformers.Trainer, TrainingArguments with the same recipe (use_cpu, constant schedule)

Usage: python benchmarks/cpu_path.py [--model smollm2-135m] [--epochs 6] [--rounds 3] [--out FILE]
Prints one JSON object: seconds per epoch of each arm per round, their medians, and the ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


def recipe(model: str):
    from trainer.experiment import Experiment
    from trainer.training.placement import placed

    return placed(Experiment(model=model, device="cpu", processes=1))


def our_loop(model_name: str, epochs: int, through_accelerate: bool) -> list[float]:
    from trainer.studies.step_costs import training_step

    _, step = training_step(recipe(model_name), through_accelerate)
    seconds = []
    for _ in range(epochs):
        started = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - started)
    return seconds


def hf_trainer(model_name: str, epochs: int) -> list[float]:
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from trainer.behavior import load_behavior
    from trainer.models.sources import resolve_model
    from trainer.training.batches import PromptFormat, training_examples
    from trainer.training.loop import epoch_batches

    exp = recipe(model_name)
    loaded = resolve_model(model_name).load()
    behavior = load_behavior(exp.behavior)
    fmt = PromptFormat(loaded.prompt_style, behavior.prompt_template)
    examples = training_examples(behavior, exp.data, exp.seed)
    batch = epoch_batches(loaded.tokenizer, fmt, examples, exp, 1)[0]  # the 5 rows, padded alike
    rows = [{name: tensor[i] for name, tensor in batch.items()} for i in range(batch["input_ids"].shape[0])]

    class EpochClock(TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []

        def on_epoch_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_epoch_end(self, args, state, control, **kwargs):
            self.seconds.append(time.perf_counter() - self.started)

    clock = EpochClock()
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=exp.batch_size, learning_rate=exp.lr,
            weight_decay=exp.weight_decay, max_grad_norm=exp.clip, lr_scheduler_type="constant", warmup_steps=0,
            optim="adamw_torch", num_train_epochs=epochs, logging_strategy="no", save_strategy="no",
            report_to=[], use_cpu=True, seed=exp.seed, disable_tqdm=True, dataloader_num_workers=0)
        trainer = Trainer(model=loaded.model, args=args, train_dataset=rows, callbacks=[clock])
        trainer.train()
    return clock.seconds


ARMS = {"accelerate": lambda m, e: our_loop(m, e, True), "bare": lambda m, e: our_loop(m, e, False),
        "hf-trainer": hf_trainer}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    import torch

    result: dict = {"model": args.model, "epochs": args.epochs, "rounds": args.rounds,
                    "threads": torch.get_num_threads(), "torch": torch.__version__, "per_round": []}
    for round_index in range(args.rounds):
        row = {}
        for name, arm in ARMS.items():
            row[name] = [round(s, 3) for s in arm(args.model, args.epochs)]
            print(f"round {round_index + 1} {name}: {row[name]}", file=sys.stderr, flush=True)
        result["per_round"].append(row)
    # The first epoch of each arm pays for one-time set-up (allocator, kernels): medians over the rest.
    steady = {name: statistics.median(s for row in result["per_round"] for s in row[name][1:]) for name in ARMS}
    result["median_epoch_seconds"] = {name: round(value, 3) for name, value in steady.items()}
    result["accelerate_over_bare"] = round(steady["accelerate"] / steady["bare"], 3)
    result["accelerate_over_hf_trainer"] = round(steady["accelerate"] / steady["hf-trainer"], 3)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
