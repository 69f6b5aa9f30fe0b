"""The one optimizer factory: training, the memory trace and the measured step all build optimizers here."""

from __future__ import annotations

import torch

from trainer.errors import ConfigError

# Optimizers the planner knows but this environment cannot train with, and what to do instead.
NOT_TRAINABLE_HERE = {
    "adamw-8bit": "8-bit AdamW (bitsandbytes) is planned, not trained, by this suite: plan it with the memory "
                  "planner (its state is computed from bitsandbytes' blockwise layout), or train with 'adamw'",
}


def check_trainable(kind: str) -> None:
    """A ConfigError naming the fix for an optimizer that can be planned but not trained here."""
    if kind in NOT_TRAINABLE_HERE:
        raise ConfigError(f"optimizer={kind!r}", [NOT_TRAINABLE_HERE[kind]])


def make_optimizer(params: list[torch.Tensor], kind: str, lr: float, weight_decay: float = 0.0,
                   foreach: bool | None = None) -> torch.optim.Optimizer:
    """`kind` as Experiment.optimizer names it. `foreach`: PyTorch's multi-tensor path (its CUDA default)
    keeps whole-model temporaries during the step; None lets PyTorch choose, as training does."""
    check_trainable(kind)
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=foreach)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, foreach=foreach)
    if kind == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(params, lr=lr, weight_decay=weight_decay, relative_step=False, scale_parameter=False,
                         warmup_init=False)
    raise ConfigError(f"optimizer={kind!r}", ["must be one of 'adamw', 'sgd', 'adafactor', 'adamw-8bit'"])
