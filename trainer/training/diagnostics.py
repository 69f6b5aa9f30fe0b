"""Per-layer diagnostics: where the gradient is, and which layers the training actually moved.

The notebook asked why "layers 13 and 15 (54% and 63% depth)" were critical in Qwen; answering that needs
the relative weight change of every decoder layer, ||W - W0|| / ||W0||, measured the same way for
every method. For LoRA the frozen weight does not move; the change is the adapter's delta
(B A scaled, from peft) relative to the base weight it is added to.
"""

from __future__ import annotations

import math

import torch

from trainer.cache.record import TopLayer
from trainer.models.quantized import float_weight
from trainer.training.methods import decoder_layers
from trainer.training.sharding import is_shard, summed_over_shards

TOP_K = 3


class LayerWatch:
    """Holds the starting weights of the trainable layer parameters (taken before any resume)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.layers = decoder_layers(model)
        self.start = [{name: p.detach().clone() for name, p in layer.named_parameters()
                       if p.requires_grad and "lora_" not in name} for layer in self.layers]

    def grad_norms(self) -> list[float]:
        """L2 norm of each layer's gradient (call after backward, before the optimizer step)."""
        return [_norm([p.grad for p in layer.parameters() if p.grad is not None]) for layer in self.layers]

    def relative_change(self) -> list[float]:
        """||W - W0|| / ||W0|| per layer (0 for a frozen layer)."""
        return [self._layer_change(layer, start) for layer, start in zip(self.layers, self.start)]

    def _layer_change(self, layer: torch.nn.Module, start: dict[str, torch.Tensor]) -> float:
        adapters = [m for m in layer.modules()
                    if hasattr(m, "get_delta_weight") and getattr(m, "active_adapters", None)]
        with torch.no_grad():
            if adapters:
                moved = sum(_sq(m.get_delta_weight(a)) for m in adapters for a in m.active_adapters)
                base = sum(_sq(float_weight(m.base_layer)) for m in adapters)
            else:
                params = dict(layer.named_parameters())
                moved = sum(_sq(params[name] - w0) for name, w0 in start.items())
                base = sum(_sq(w0) for w0 in start.values())
        return math.sqrt(moved / base) if base else 0.0


def top_layers(changes: list[float], k: int = TOP_K) -> list[TopLayer]:
    """The k most-changed layers with their relative depth (index / layer count, the notebook's 13/24 = 54%)."""
    order = sorted(range(len(changes)), key=lambda i: -changes[i])[:k]
    return [TopLayer(i, round(i / len(changes), 3), changes[i]) for i in order]


def _sq(t: torch.Tensor) -> float:
    """Sum of squares; of a sharded tensor, each process's shard summed and the sums added (every rank calls
    this for the same tensors)."""
    squares = t.detach().float().pow(2).sum()
    return float(summed_over_shards(squares) if is_shard(t) else squares)


def _norm(tensors: list[torch.Tensor]) -> float:
    return math.sqrt(sum(_sq(t) for t in tensors)) if tensors else 0.0
