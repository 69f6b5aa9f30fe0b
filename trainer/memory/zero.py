"""Model-state bytes per parameter, and where sharding and offload put them (ZeRO's accounting).

Model states are what a step keeps besides activations: weights, gradients and the optimizer's state.
In fp32 with AdamW that is 4 + 4 + 8 = 16 B per parameter. In 16-bit mixed precision (ZeRO, Rajbhandari
et al. 2020) it is 2 (half weights) + 2 (half gradients) + 12 (fp32 master weights and two moments),
and DeepSpeed's ZeRO-3 also keeps fp32 gradients on the host (+4). DeepSpeed's estimators
(`estimate_zero2_model_states_mem_needs`, `estimate_zero3_model_states_mem_needs`) add a buffer factor
(1.5) on the host and count the host copy each GPU's process loads at start; the figures below are built
from the byte counts and those two conventions, and tests/test_memory_planner.py checks them against
DeepSpeed's formulas.
"""

from __future__ import annotations

from dataclasses import dataclass

FP32 = 4
HALF = 2
ADAM_MOMENTS = 8  # two fp32 moments
MASTER_AND_MOMENTS = FP32 + ADAM_MOMENTS  # mixed precision's fp32 copy of the weights plus AdamW's moments
FP32_ADAMW_STATES = FP32 + FP32 + ADAM_MOMENTS  # weights, gradients, moments: 16 B per parameter
HOST_BUFFER_FACTOR = 1.5  # DeepSpeed's default additional_buffer_factor for pinned and staging memory


@dataclass(frozen=True)
class Placement:
    """Model-state bytes on each GPU and on the host (per node) for one ZeRO setup."""

    stage: int
    offload_optimizer: bool
    offload_params: bool
    gpu: int
    host: int

    @property
    def label(self) -> str:
        where = "params+optimizer" if self.offload_params else "optimizer" if self.offload_optimizer else "none"
        return f"ZeRO-{self.stage} (offload: {where})"


def fp32_adamw_states(parameters: int) -> int:
    """Weights + gradients + AdamW moments in fp32: 16 B per parameter."""
    return FP32_ADAMW_STATES * parameters


def zero2(parameters: int, gpus_per_node: int = 1, nodes: int = 1, offload_optimizer: bool = True,
          buffer: float = HOST_BUFFER_FACTOR) -> Placement:
    """ZeRO-2, 16-bit: gradients and optimizer states sharded; weights replicated on every GPU."""
    gpus = gpus_per_node * nodes
    if offload_optimizer:
        # Half weights stay; gradients stream to the host in buckets; the host holds master weights, moments
        # and fp32 gradients, or at start one fp32 copy of the model per local process, whichever is more.
        gpu = HALF * parameters
        host = parameters * max(FP32 * gpus, MASTER_AND_MOMENTS + FP32) * buffer
    else:
        gpu = (HALF + HALF) * parameters + int((MASTER_AND_MOMENTS + FP32) * parameters / gpus)
        host = parameters * FP32 * gpus_per_node * buffer
    return Placement(2, offload_optimizer, False, int(gpu), int(host))


def zero3(parameters: int, largest_layer: int, gpus_per_node: int = 1, nodes: int = 1,
          offload_optimizer: bool = True, offload_params: bool = True, zero_init: bool = True,
          buffer: float = HOST_BUFFER_FACTOR) -> Placement:
    """ZeRO-3, 16-bit: weights sharded too; a layer is gathered (half weights and gradients) while it runs."""
    gpus = gpus_per_node * nodes
    per_node = 1 / nodes
    gathered_layer = (HALF + HALF) * largest_layer
    everything = HALF + MASTER_AND_MOMENTS + FP32  # 18 B: half weights, master + moments, fp32 gradients
    if offload_optimizer and offload_params:
        gpu, host_bytes = gathered_layer, everything
    elif offload_optimizer:
        gpu, host_bytes = gathered_layer + int(HALF * parameters / gpus), everything - HALF
    else:
        gpu = gathered_layer + int(everything * parameters / gpus)
        host = (largest_layer if zero_init else parameters) * FP32 * gpus_per_node * buffer
        return Placement(3, False, False, int(gpu), int(host))
    # zero_init builds each shard in place; without it every local process first loads a whole fp32 copy.
    per_parameter = host_bytes * per_node if zero_init else max(FP32 * gpus_per_node, host_bytes * per_node)
    host = parameters * per_parameter * buffer
    return Placement(3, offload_optimizer, offload_params, int(gpu), int(host))


def model_state_lines(parameters: int, largest_layer: int) -> list[str]:
    """What `python -m trainer plan` prints above the recipes: the count and the model-state bytes."""
    from trainer.units import format_bytes

    lines = [f"{parameters:,} parameters; largest layer {largest_layer:,}",
             f"model states, fp32 + AdamW (weights + gradients + moments = {FP32_ADAMW_STATES} B/parameter): "
             f"{format_bytes(fp32_adamw_states(parameters))}"]
    for placed in (zero2(parameters), zero3(parameters, largest_layer)):
        lines.append(f"{placed.label}, 16-bit, 1 GPU: {format_bytes(placed.gpu)} on the GPU, "
                     f"{format_bytes(placed.host)} on the host (DeepSpeed's estimator)")
    return lines
