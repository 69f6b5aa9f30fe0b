"""Resumable training state (model + AdamW moments) as safetensors; no pickle anywhere."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from trainer import store

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"


def save_checkpoint(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, epoch: int) -> None:
    """Written into a temp folder and renamed; the manifest (checksums, epoch) is written last."""
    state = optimizer.state_dict()
    tensors = {f"{index}/{name}": value.detach().contiguous()
               for index, entries in state["state"].items() for name, value in entries.items()}
    with store.atomic_dir(folder) as tmp:
        save_model(model, str(tmp / MODEL_FILE))  # handles tied embeddings
        save_file(tensors, str(tmp / OPTIMIZER_FILE))
        store.write_manifest(tmp, {"epoch": epoch, "param_groups": state["param_groups"]})


def load_checkpoint(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Restore both states after verifying checksums; returns the epoch the state belongs to."""
    manifest = store.read_manifest(folder, verify=True)
    missing, unexpected = load_model(model, str(folder / MODEL_FILE), strict=True)
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in load_file(str(folder / OPTIMIZER_FILE)).items():
        index, name = key.split("/", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": manifest["param_groups"]})
    return int(manifest["epoch"])
