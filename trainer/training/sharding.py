"""CPU offload that trains: FSDP2 (`torch.distributed.fsdp.fully_shard`) with `CPUOffloadPolicy`.

Parameters, gradients and AdamW state live on the host, sharded across the processes; each decoder
layer's weights are gathered onto the device for its forward and backward and freed after, so the
device holds the embeddings and head (the root group) plus about two layers at a time.

Why FSDP2 and not DeepSpeed ZeRO-3 offload: it is part of torch (nothing to install or compile), it runs
on a CPU with gloo, so the same sharded path is tested on these machines against an unsharded run; its
state is plain DTensors, which gather to full tensors for the cache's safetensors checkpoints, while
DeepSpeed writes its own pickled checkpoint format; and accelerate enables DeepSpeed only off the CPU.
"""

from __future__ import annotations

import os
import sys

import torch

from trainer.errors import ConfigError
from trainer.experiment import Experiment, Full
from trainer.training.methods import decoder_layers
from trainer.training.placement import PROCESS_GROUP_TIMEOUT, process_group_backend

SHARDED = "fsdp2"  # the Experiment.offload value that trains this way
SHARDED_PRECISIONS = ("fp32", "bf16-autocast")
SHARDED_OPTIMIZERS = ("adamw", "sgd")


def is_sharded(exp: Experiment) -> bool:
    return exp.offload == SHARDED


def sharding_problems(exp: Experiment) -> list[str]:
    """What this offload cannot wrap, each with the fix."""
    if not is_sharded(exp):
        return []
    problems = []
    if not isinstance(exp.method, Full):
        problems.append(f"offload='fsdp2' with method={exp.method!r}: only full fine-tuning is sharded here (a "
                        "LoRA adapter's state is small enough to stay on the device); use offload=None for "
                        "LoRA or Unfreeze")
    if exp.precision not in SHARDED_PRECISIONS:
        problems.append(f"offload='fsdp2' with precision={exp.precision!r}: use one of {list(SHARDED_PRECISIONS)} "
                        "(fp16 needs FSDP's sharded loss scaler, which this trainer does not set up)")
    if exp.optimizer not in SHARDED_OPTIMIZERS:
        problems.append(f"offload='fsdp2' with optimizer={exp.optimizer!r}: use one of {list(SHARDED_OPTIMIZERS)}")
    return problems


def shard(model: torch.nn.Module, device: str) -> torch.nn.Module:
    """Every decoder layer, then the root, sharded across this process group with host offload."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, fully_shard

    if not dist.is_initialized():
        backend = process_group_backend(device) or "gloo"
        if "WORLD_SIZE" in os.environ:  # one process under torchrun: accelerate starts no group for it
            dist.init_process_group(backend, timeout=PROCESS_GROUP_TIMEOUT)
        else:  # a process of its own (a memory measurement): a group of one, no network
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    mesh = init_device_mesh(device, (dist.get_world_size(),))
    policy = CPUOffloadPolicy(pin_memory=device == "cuda")  # pinned host memory needs a GPU
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh, offload_policy=policy)
    fully_shard(model, mesh=mesh, offload_policy=policy)
    return model


def reshard(model: torch.nn.Module) -> None:
    """Put a sharded model's weights back into their shards. FSDP2 keeps the root group gathered after a
    forward until the backward that follows; a probe has no backward, so without this the optimizer and
    the next step would see the gathered copies, which FSDP frees later."""
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a shard (a collective: every process must call it, in the same order)."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def all_finite(params: list[torch.Tensor]) -> bool:
    """Whether every weight is finite; the shards of a sharded model are checked where they live and the
    answer agreed by all processes (so they all stop, or none does)."""
    from torch.distributed.tensor import DTensor

    local = _finite_everywhere([p.to_local() if isinstance(p, DTensor) else p for p in params])
    if not any(isinstance(p, DTensor) for p in params):
        return local
    import torch.distributed as dist

    flag = torch.tensor([int(local)], device=params[0].to_local().device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def _finite_everywhere(tensors: list[torch.Tensor]) -> bool:
    """Whether no element is inf or NaN, from one float64 sum per tensor and a single read of the answer: an inf
    or NaN element makes its sum inf or NaN, and finite elements of up to 32 bits cannot overflow a float64 sum
    (3.4e38 x 2^31 is far below 1.8e308). Five elementwise passes per tensor (`isfinite().all()`) cost about a
    tenth of a CPU training step, and on a GPU every per-tensor answer waits for the device."""
    # Checked element-wise: float64 tensors (their sums could overflow) and tensors on MPS (it has no float64).
    wide = [t for t in tensors if t.dtype == torch.float64 or t.device.type == "mps"]
    sums = [t.detach().sum(dtype=torch.float64) for t in tensors
            if t.dtype != torch.float64 and t.device.type != "mps" and t.numel()]
    finite = bool(torch.stack(sums).isfinite().all()) if sums else True
    return finite and all(bool(torch.isfinite(t).all()) for t in wide)


def is_shard(tensor: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def summed_over_shards(partial: torch.Tensor) -> torch.Tensor:
    """A sum over a sharded tensor: this process's part (a DTensor reduction), added across processes."""
    import torch.distributed as dist

    local = partial.to_local() if is_shard(partial) else partial
    local = local.clone()
    dist.all_reduce(local)
    return local


def shard_like(reference: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """`value` (a whole tensor every process holds) split the way `reference` is; unchanged if unsharded."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if not isinstance(reference, DTensor) or value.shape != reference.shape:
        return value
    return distribute_tensor(value.to(reference.device), reference.device_mesh, reference.placements)


def note_if_it_fits_anyway(exp: Experiment, parameters: int) -> None:
    """Offload where the model states fit on the device is allowed, with a note (it only costs time)."""
    states = 16 * parameters
    if exp.device == "cuda":
        free, _ = torch.cuda.mem_get_info()
        if states < free:
            print(f"[finetune] note: {exp.model} fp32 AdamW model states ({states / 2**30:.1f} GiB) fit in the "
                  f"GPU's free {free / 2**30:.1f} GiB; offload='fsdp2' trains slower than offload=None here",
                  file=sys.stderr)
    elif exp.device == "cpu":
        print(f"[finetune] note: offload='fsdp2' on a CPU shards {exp.model} across processes but the host is the "
              "device, so nothing is saved; it is how the sharded path is tested without a GPU", file=sys.stderr)


def refuse_unless_trainable(exp: Experiment) -> None:
    problems = sharding_problems(exp)
    if problems:
        raise ConfigError(f"Experiment(model={exp.model!r}, offload={exp.offload!r})", problems)
