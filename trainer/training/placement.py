"""Where a run trains: the device kind, the number of processes, and the `Accelerator` that places it there.

`Experiment(device="auto")` means CUDA when torch sees a GPU, else Apple's MPS, else the CPU; an explicit
kind is checked against the machine, so asking for CUDA where there is none is an error, not a CPU run.
The resolved kind and process count enter the cache key: a CPU record does not answer for a GPU run.

Accelerate places the model, wraps it for data parallelism across processes (gloo on CPU, NCCL on GPU),
starts the process group from torchrun's environment, and autocasts where it supports the precision.
It has no fp16 on a CPU (it silently trains without autocast or scaler there), so fp16-autocast on a CPU
autocasts with torch directly; the loop's step is the same either way (scale, backward, unscale, clip, step).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import platform
from dataclasses import dataclass

import torch

from trainer import settings
from trainer.errors import ConfigError
from trainer.experiment import DEVICES, Experiment

# Accelerate's name for each precision it autocasts; the rest train with mixed_precision="no".
ACCELERATE_PRECISION = {"bf16-autocast": "bf16", "fp16-autocast": "fp16"}
AUTOCAST_DTYPE = {"bf16-autocast": torch.bfloat16, "fp16-autocast": torch.float16}
# The other processes wait while the main one probes and writes (generation on a big model can take long):
# longer than torch's defaults (gloo 30 min, NCCL 10 min), so a slow probe is not reported as a dead rank.
PROCESS_GROUP_TIMEOUT = datetime.timedelta(hours=3)


def available_devices() -> list[str]:
    """Device kinds this machine can train on, best first."""
    kinds = ["cuda"] if torch.cuda.is_available() else []
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        kinds.append("mps")
    return kinds + ["cpu"]


def resolve_device(requested: str, subject: str = "device") -> str:
    """The device kind to train on: the best available for "auto", else `requested` if this machine has it."""
    if requested not in DEVICES:
        raise ConfigError(f"{subject}={requested!r}", [f"must be one of {list(DEVICES)}"])
    kinds = available_devices()
    if requested == "auto":
        return kinds[0]
    if requested not in kinds:
        raise ConfigError(f"{subject}={requested!r}", [
            f"this machine has no {requested} device (torch {torch.__version__} sees: {', '.join(kinds)}); "
            f"use device='auto' or 'cpu', or run on a machine with {requested}"])
    return requested


def device_slots(kind: str) -> int:
    """How many processes the kind can hold: one per GPU, one per CPU core."""
    if kind == "cuda":
        return torch.cuda.device_count()
    if kind == "mps":
        return 1
    return settings.cores()


def placed(exp: Experiment, active: settings.Settings | None = None) -> Experiment:
    """`exp` with a concrete device kind and process count: its own when it names them, else the settings'
    (--ft-device, --ft-processes), else the best device and one process. Checked against this machine."""
    active = active or settings.active()
    requested = exp.device if exp.device != "auto" else active.device_kind()
    subject = "device" if exp.device != "auto" else active.device_option()
    kind = resolve_device(requested, subject)
    processes = exp.processes if exp.processes is not None else active.process_count()
    problems = process_problems(processes, kind, exp.batch_size)
    if problems:
        raise ConfigError(f"Experiment(model={exp.model!r}, processes={processes!r}, device={kind!r})", problems)
    return dataclasses.replace(exp, device=kind, processes=processes)


def process_problems(processes: int, kind: str, batch_size: int) -> list[str]:
    slots = device_slots(kind)
    problems = []
    if processes > slots:
        unit = "GPUs" if kind == "cuda" else "cores" if kind == "cpu" else f"{kind} devices"
        problems.append(f"processes={processes} > {slots} {unit} on this machine: one process per "
                        f"{'GPU' if kind == 'cuda' else 'core'}; use processes <= {slots}")
    if processes > batch_size:
        problems.append(f"processes={processes} > batch_size={batch_size}: every process needs at least one "
                        f"example per step; use processes <= {batch_size} or a larger batch")
    return problems


def is_placed(exp: Experiment) -> bool:
    return exp.device != "auto" and exp.processes is not None


def accelerator_for(exp: Experiment):
    """A fresh Accelerator for this run (one process trains many runs of different precisions, and accelerate
    keeps its state process-wide, so the precision part of it is reset per run; a process group is kept)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import InitProcessGroupKwargs

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    AcceleratorState._reset_state(reset_partial_state=not distributed)
    group = InitProcessGroupKwargs(backend=process_group_backend(exp.device), timeout=PROCESS_GROUP_TIMEOUT)
    return Accelerator(cpu=exp.device == "cpu", mixed_precision=_accelerate_precision(exp), kwargs_handlers=[group])


def process_group_backend(device: str) -> str | None:
    """On GPUs NCCL, with gloo beside it for the host tensors of an offloaded model (its shards, its
    finiteness flag); elsewhere accelerate's choice (gloo)."""
    return "cuda:nccl,cpu:gloo" if device == "cuda" else None


def _accelerate_precision(exp: Experiment) -> str:
    """What accelerate can autocast here: bf16 anywhere; fp16 (with its scaler) off the CPU, scaler wanted."""
    wanted = ACCELERATE_PRECISION.get(exp.precision, "no")
    if wanted == "fp16" and (exp.device == "cpu" or not exp.uses_grad_scaler):
        return "no"
    return wanted


@dataclass
class Precision:
    """How a step computes: the autocast context and the loss scaler (disabled when the run has none).

    fp16-autocast keeps fp32 master weights and scales the loss (scale -> backward -> unscale -> clip ->
    step -> update), the supported pattern. With fp16 *parameters* (precision "fp16") and a scaler, torch
    refuses to unscale (the notebook's "FP16 + clipping" error): that refusal is an outcome of the
    experiment, recorded with its step, not a crash.
    """

    autocast: contextlib.AbstractContextManager | type
    scaler: torch.amp.GradScaler
    by: str  # "accelerate" or "torch": who autocasts (the record says so)


def precision_for(accelerator, exp: Experiment) -> Precision:
    if accelerator.native_amp:
        scaler = accelerator.scaler or torch.amp.GradScaler(exp.device, enabled=False)
        return Precision(accelerator.autocast, scaler, "accelerate")
    dtype = AUTOCAST_DTYPE.get(exp.precision)
    kind = accelerator.device.type

    def autocast():
        return torch.autocast(kind, dtype=dtype) if dtype is not None else contextlib.nullcontext()

    return Precision(autocast, torch.amp.GradScaler(kind, enabled=exp.uses_grad_scaler), "torch")


@contextlib.contextmanager
def weights_as_they_are(model: torch.nn.Module):
    """Probes read the weights as stored, without autocast, as at epoch 0: accelerate wraps a mixed-precision
    model's forward in autocast, so its own forward is put back while probing."""
    original = model.__dict__.get("_original_forward")
    if original is None:
        yield model
        return
    patched = model.forward
    model.forward = original
    try:
        yield model
    finally:
        model.forward = patched


def describe(accelerator, exp: Experiment, precision: Precision) -> dict:
    """What the record says about where the run trained."""
    device = accelerator.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {"device": device.type, "device_name": name, "processes": accelerator.num_processes,
            "backend": _backend(), "precision": exp.precision, "autocast_by": precision.by,
            "accelerate_precision": accelerator.mixed_precision, "torch": torch.__version__,
            "cuda": torch.version.cuda if device.type == "cuda" else None}


def _backend() -> str | None:
    return torch.distributed.get_backend() if torch.distributed.is_available() and torch.distributed.is_initialized() \
        else None
