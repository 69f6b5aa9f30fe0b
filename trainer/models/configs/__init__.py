"""Architectures as data: the public config.json of each registered model, for planning without weights.

Each folder holds the config.json its Hugging Face repository publishes (source in `_source`), so a
model is built on the meta device with no weights and no network, and its parameter count is exact.
"""

from __future__ import annotations

import copy
from pathlib import Path

from trainer.errors import ConfigError

HERE = Path(__file__).resolve().parent


def bundled_names() -> list[str]:
    return sorted(p.parent.name for p in HERE.glob("*/config.json"))


def bundled_folder(name: str) -> Path | None:
    folder = HERE / name
    return folder if (folder / "config.json").is_file() else None


def load_config(folder: Path):
    """A transformers config from a folder's config.json (never remote code)."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(str(folder), trust_remote_code=False)


def with_layers(config, layers: int):
    """The same architecture with `layers` decoder layers (per-layer types keep their repeating pattern)."""
    if layers < 0:
        raise ConfigError(f"layer count {layers}", ["must be 0 or more"])
    shorter = copy.deepcopy(config)
    types = getattr(config, "layer_types", None)
    shorter.num_hidden_layers = layers
    if types:
        shorter.layer_types = [types[i % len(types)] for i in range(layers)]
    return shorter


def build_on_meta(config, dtype=None):
    """The model with every tensor on the meta device: shapes and counts, no memory."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, dtype=dtype or torch.float32)


def parameter_count(config) -> int:
    """Distinct parameters (tied embeddings count once), as published model cards count them."""
    return sum(p.numel() for p in build_on_meta(config).parameters())


def largest_module_parameters(config) -> int:
    """The most parameters one module holds itself (not counting its children): DeepSpeed's "largest layer",
    what ZeRO-3 gathers at once (for most causal LMs the embedding or the output head)."""
    model = build_on_meta(config)
    return max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())


def decoder_layer_parameters(config) -> tuple[int, int]:
    """(parameters of one decoder layer, parameters outside the decoder layers): from the counts at 1 and 2
    layers, so every architecture is measured the same way."""
    one, two = (parameter_count(with_layers(config, n)) for n in (1, 2))
    return two - one, one - (two - one)
