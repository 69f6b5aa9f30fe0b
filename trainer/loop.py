"""Full fine-tuning loop: FP32 AdamW, gradient clipping, constant learning rate, deterministic order.

Resuming is exact because nothing depends on the total number of epochs (constant lr, no
schedule) and each epoch's shuffle and dropout RNG are seeded from (seed, epoch) alone.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from trainer.data import Example, PromptFormat, build_training_batch
from trainer.experiment import Experiment


def make_optimizer(model: torch.nn.Module, exp: Experiment) -> torch.optim.Optimizer:
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=exp.lr,
                             weight_decay=exp.weight_decay)


def epoch_batches(tokenizer, fmt: PromptFormat, examples: tuple[Example, ...], exp: Experiment,
                  epoch: int) -> list[dict[str, torch.Tensor]]:
    """This epoch's shuffled mini-batches; the order depends only on (seed, epoch)."""
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(exp.seed * 100_003 + epoch))
    chosen = [examples[i] for i in order.tolist()]
    return [build_training_batch(tokenizer, fmt, chosen[i: i + exp.batch_size])
            for i in range(0, len(chosen), exp.batch_size)]


def train_one_epoch(model, optimizer, batches, exp: Experiment, epoch: int) -> dict:
    torch.manual_seed(exp.seed * 100_003 + epoch)  # dropout, if the model has any
    model.train()
    losses, norms, nonfinite = [], [], []
    for step, batch in enumerate(batches):
        loss = model(**batch).loss
        loss.backward()
        limit = exp.clip if exp.clip is not None else math.inf
        norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), limit))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        norms.append(norm)
        if not (math.isfinite(losses[-1]) and math.isfinite(norm)):
            nonfinite.append(step)
    model.eval()
    return {"epoch": epoch, "loss": sum(losses) / len(losses), "grad_norm": max(norms),
            "steps": len(batches), "nonfinite_steps": nonfinite}


def run_epochs(model, tokenizer, fmt: PromptFormat, examples: tuple[Example, ...], exp: Experiment,
               optimizer, start_epoch: int, after_epoch: Callable[[int, dict], None],
               progress: bool = True) -> None:
    """Train epochs start_epoch+1 .. exp.epochs, calling `after_epoch` (evaluate/checkpoint) after each."""
    label = f"fine-tune {exp.model} seed {exp.seed}" + (" (null control)" if exp.data == "control" else "")
    bar = tqdm(range(start_epoch + 1, exp.epochs + 1), desc=label, unit="epoch", initial=start_epoch,
               total=exp.epochs, disable=not progress, dynamic_ncols=True,
               position=int(os.environ.get("FT_PROGRESS_ROW", 0)))  # side-by-side runs: one row each
    for epoch in bar:
        started = time.perf_counter()
        log = train_one_epoch(model, optimizer, epoch_batches(tokenizer, fmt, examples, exp, epoch), exp, epoch)
        log["seconds"] = round(time.perf_counter() - started, 3)
        bar.set_postfix(loss=f"{log['loss']:.4f}", grad=f"{log['grad_norm']:.2f}")
        after_epoch(epoch, log)
