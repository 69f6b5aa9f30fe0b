"""Resumable training state as safetensors, no pickle anywhere: the parameters that train (all of them
for full fine-tuning, the unfrozen layers, or the LoRA adapter) and their AdamW moments. The frozen
rest is the pretrained model, which loads from its own files."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from trainer.cache import store

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"


def save_checkpoint(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, epoch: int) -> None:
    """Written into a temp folder and renamed; the manifest (checksums, epoch) is written last."""
    state = optimizer.state_dict()
    entries = {f"{index}/{name}": value for index, values in state["state"].items() for name, value in values.items()}
    tensors = {key: value.detach().contiguous() for key, value in entries.items() if torch.is_tensor(value)}
    # Plain numbers in an optimizer's state (Adafactor's step count) go in the manifest, as JSON.
    scalars = {key: value for key, value in entries.items() if not torch.is_tensor(value)}
    with store.atomic_dir(folder) as tmp:
        save_file({name: p.detach().contiguous() for name, p in trainable(model).items()}, str(tmp / MODEL_FILE))
        save_file(tensors, str(tmp / OPTIMIZER_FILE))
        store.write_manifest(tmp, {"epoch": epoch, "param_groups": state["param_groups"], "scalars": scalars})


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
            params[name].copy_(tensor)
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in (load_file(str(folder / OPTIMIZER_FILE)) | manifest.get("scalars", {})).items():
        index, name = key.split("/", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": manifest["param_groups"]})
    return int(manifest["epoch"])
