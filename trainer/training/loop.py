"""The training loop: the experiment's optimizer over the parameters the method trains, gradient clipping,
constant learning rate, deterministic order, one of four precisions, and a non-finite check at every step.

Resuming is exact because nothing depends on the total number of epochs (constant lr, no
schedule) and each epoch's shuffle and dropout RNG are seeded from (seed, epoch) alone.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from trainer.behavior import Example
from trainer.cache.record import EpochLog, NonfiniteEvent, Stop
from trainer.experiment import Experiment
from trainer.training.batches import PromptFormat, build_training_batch, rank_share
from trainer.training.diagnostics import LayerWatch
from trainer.training.optim import make_optimizer
from trainer.training.placement import Precision
from trainer.training.sharding import all_finite


def optimizer_for(model: torch.nn.Module, exp: Experiment) -> torch.optim.Optimizer:
    """The experiment's optimizer over the parameters its method trains."""
    return make_optimizer([p for p in model.parameters() if p.requires_grad], exp.optimizer, exp.lr, exp.weight_decay)


def epoch_batches(tokenizer, fmt: PromptFormat, examples: tuple[Example, ...], exp: Experiment,
                  epoch: int) -> list[dict[str, torch.Tensor]]:
    """This epoch's shuffled mini-batches; the order depends only on (seed, epoch)."""
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(exp.seed * 100_003 + epoch))
    chosen = [examples[i] for i in order.tolist()]
    return [build_training_batch(tokenizer, fmt, chosen[i: i + exp.batch_size])
            for i in range(0, len(chosen), exp.batch_size)]


PROGRESS_ROW = 0  # the terminal row of this process's progress bar (worker processes take one each)


def use_progress_row(row: int) -> None:
    global PROGRESS_ROW
    PROGRESS_ROW = row


def train_one_epoch(model, optimizer, batches, exp: Experiment, epoch: int, precision: Precision,
                    watch: LayerWatch | None = None, accelerator=None) -> EpochLog:
    """One pass; every step is checked for non-finite loss, gradients and weights (numbered from 1).

    With several processes each takes its share of every batch, weighted so that the averaged gradient is
    the one-process gradient of the whole batch (see batches.rank_share); the logged loss is the global one.
    """
    torch.manual_seed(exp.seed * 100_003 + epoch)  # dropout, if the model has any
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    limit = exp.clip if exp.clip is not None else math.inf
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    device = accelerator.device if accelerator else next(model.parameters()).device  # where compute happens
    losses, norms, events, skipped, layer_grads, stopped = [], [], [], [], [], None
    for index, batch in enumerate(batches):
        step = (epoch - 1) * len(batches) + index + 1
        part, weight = rank_share(batch, rank, world)
        with precision.autocast():
            loss = model(**_on(part, device)).loss
        if world > 1:
            loss = loss * weight
        precision.scaler.scale(loss).backward()
        try:
            precision.scaler.unscale_(optimizer)
        except ValueError as error:  # "Attempting to unscale FP16 gradients."
            optimizer.zero_grad(set_to_none=True)
            stopped = Stop(step, f"{type(error).__name__}: {error}", epoch)
            break
        layer_grads = watch.grad_norms() if watch is not None else []
        norm = float(_clip(accelerator, params, limit))
        scale = precision.scaler.get_scale()
        if exp.lr > 0:  # at lr 0 no step can move a weight (AdamW's decay is lr x weight decay too): none is taken
            precision.scaler.step(optimizer)
        precision.scaler.update()
        if precision.scaler.is_enabled() and precision.scaler.get_scale() < scale:
            skipped.append(step)  # inf gradients under a scaler: the step is skipped and the scale lowered
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(accelerator.reduce(loss.detach(), "mean") if world > 1 else loss.detach()))
        norms.append(norm)
        event = _nonfinite(step, losses[-1], norm if step not in skipped else 0.0, params)
        if event:
            events.append(event)
            if exp.on_nonfinite == "stop":
                stopped = Stop(step, "non-finite " + ", ".join(event.flags()), epoch)
                break
    model.eval()
    return EpochLog(epoch, sum(losses) / len(losses) if losses else math.nan, max(norms) if norms else math.nan,
                    len(losses), events, skipped, layer_grads, stopped=stopped)


def _on(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {name: tensor.to(device) for name, tensor in batch.items()}


def _clip(accelerator, params: list[torch.Tensor], limit: float) -> torch.Tensor:
    """The total gradient norm, clipped to `limit` (accelerate's clip knows sharded parameters)."""
    if accelerator is None:
        return torch.nn.utils.clip_grad_norm_(params, limit)
    return accelerator.clip_grad_norm_(params, limit)


def _nonfinite(step: int, loss: float, grad_norm: float, params: list[torch.Tensor]) -> NonfiniteEvent | None:
    weights_bad = not all_finite(params)
    event = NonfiniteEvent(step, not math.isfinite(loss), not math.isfinite(grad_norm), weights_bad)
    return event if event.flags() else None


def run_epochs(model, tokenizer, fmt: PromptFormat, examples_at: Callable[[int], tuple[Example, ...]], exp: Experiment,
               optimizer, start_epoch: int, after_epoch: Callable[[int, EpochLog], None],
               precision: Precision, progress: bool = True, watch: LayerWatch | None = None,
               accelerator=None) -> None:
    """Train epochs start_epoch+1 .. exp.epochs on `examples_at(epoch)`, calling `after_epoch` (evaluate/checkpoint)
    after each; a step that stops the run (non-finite under on_nonfinite="stop", or a refused unscale) ends it."""
    label = f"fine-tune {exp.model} seed {exp.seed}" + (" (null control)" if exp.data == "control" else "")
    bar = tqdm(range(start_epoch + 1, exp.epochs + 1), desc=label, unit="epoch", initial=start_epoch,
               total=exp.epochs, disable=not progress or (accelerator is not None and not accelerator.is_main_process),
               dynamic_ncols=True,
               position=PROGRESS_ROW)  # side-by-side runs: one row each
    for epoch in bar:
        started = time.perf_counter()
        batches = epoch_batches(tokenizer, fmt, examples_at(epoch), exp, epoch)
        log = train_one_epoch(model, optimizer, batches, exp, epoch, precision, watch, accelerator)
        log.seconds = round(time.perf_counter() - started, 3)
        bar.set_postfix(loss=f"{log.loss:.4f}", grad=f"{log.grad_norm:.2f}")
        after_epoch(epoch, log)
        if log.stopped is not None:
            break
