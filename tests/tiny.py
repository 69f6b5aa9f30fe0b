"""The framework tests' tiny models in one place: random 2-layer models with a byte tokenizer, the
experiment most tests train on them, and a local Hugging Face folder made from one (milliseconds each)."""

from __future__ import annotations

from pathlib import Path

from trainer import Experiment
from trainer.models.sources import REGISTRY, resolve_model

TINY_MODELS = ("tiny-llama", "tiny-qwen2", "tiny-phi")
# A learning rate this high moves a random 2-layer model within an epoch; 4 greedy tokens keep probing short.
TINY = dict(model="tiny-llama", eval_every=1, lr=1e-3, gen_tokens=4)


def tiny(**fields) -> Experiment:
    """The tiny experiment, with any Experiment field changed."""
    return Experiment(**{**TINY, **fields})


def save_tiny(folder: Path):
    """tiny-qwen2 saved as a local Hugging Face folder (safetensors and tokenizer); returns the loaded model."""
    loaded = resolve_model("tiny-qwen2").load()
    loaded.model.save_pretrained(folder, safe_serialization=True)
    loaded.tokenizer.save_pretrained(folder)
    return loaded


def load_tiny_models_once() -> None:
    """Import the tiny models' code (and generation) once per process: pytester's in-process runs drop
    modules first imported inside them, and torch cannot register its operators twice."""
    for name in TINY_MODELS:
        loaded = REGISTRY[name].load()
        loaded.model.generate(**loaded.tokenizer(["x"], return_tensors="pt"), max_new_tokens=1, do_sample=False)
