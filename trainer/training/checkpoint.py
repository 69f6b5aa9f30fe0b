"""Resumable training state as safetensors, no pickle anywhere: the parameters that train (all of them
for full fine-tuning, the unfrozen layers, or the LoRA adapter) and their AdamW moments. The frozen
rest is the pretrained model, which loads from its own files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from trainer.cache import store
from trainer.training.sharding import full, shard_like

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"


@dataclass
class TrainingState:
    """Whole tensors of what trains and of the optimizer's state, ready to write."""

    params: dict[str, torch.Tensor]
    optimizer_tensors: dict[str, torch.Tensor]
    scalars: dict[str, float]
    param_groups: list[dict]


def gather_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, keep: bool = True) -> TrainingState | None:
    """The training state as whole tensors. Under sharding every process must call it (it gathers shards);
    only the one that writes keeps them (`keep`), so the host holds one whole copy, not one per process."""
    state = optimizer.state_dict()
    entries = {f"{index}/{name}": value for index, values in state["state"].items() for name, value in values.items()}

    def whole(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        gathered = {}
        for key, value in tensors.items():
            value = full(value).detach()
            if keep:
                gathered[key] = value.cpu().contiguous()
        return gathered

    tensors = whole({key: value for key, value in entries.items() if torch.is_tensor(value)})
    params = whole(trainable(model))
    # Plain numbers in an optimizer's state (Adafactor's step count) go in the manifest, as JSON.
    scalars = {key: value for key, value in entries.items() if not torch.is_tensor(value)}
    return TrainingState(params, tensors, scalars, state["param_groups"]) if keep else None


def save_checkpoint(folder: Path, state: TrainingState, epoch: int) -> None:
    """Written into a temp folder and renamed; the manifest (checksums, epoch) is written last."""
    with store.atomic_dir(folder) as tmp:
        save_file(state.params, str(tmp / MODEL_FILE))
        save_file(state.optimizer_tensors, str(tmp / OPTIMIZER_FILE))
        store.write_manifest(tmp, {"epoch": epoch, "param_groups": state.param_groups, "scalars": state.scalars})


def trainable(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """Parameters that train, each once (tied embeddings appear under one name)."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def load_checkpoint(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Restore both states after verifying checksums; returns the epoch the state belongs to."""
    manifest = store.read_manifest(folder, verify=True)
    params = trainable(model)
    saved = load_file(str(folder / MODEL_FILE))
    if saved.keys() != params.keys():
        raise ValueError(f"{folder} holds {len(saved)} trained tensors, but this model trains {len(params)}: "
                         f"it belongs to another method or model")
    with torch.no_grad():
        for name, tensor in saved.items():
            params[name].copy_(shard_like(params[name], tensor))
    by_index = [p for group in optimizer.param_groups for p in group["params"]]
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in (load_file(str(folder / OPTIMIZER_FILE)) | manifest.get("scalars", {})).items():
        index, name = key.split("/", 1)
        if torch.is_tensor(value) and int(index) < len(by_index):
            value = shard_like(by_index[int(index)], value)  # moments are split like their parameter
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": manifest["param_groups"]})
    return int(manifest["epoch"])
