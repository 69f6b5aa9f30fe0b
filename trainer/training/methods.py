"""Which parameters train: full fine-tuning, selective unfreezing, or LoRA adapters through peft.

`apply_method` runs on a freshly loaded model before the optimizer is made; afterwards exactly the
parameters that train have `requires_grad`, and that is all a checkpoint stores (for LoRA: the
adapter; the frozen rest is the pretrained model, reloaded from its own files).
"""

from __future__ import annotations

import torch

from trainer.errors import ConfigError
from trainer.experiment import Experiment, Full, Layers, LoRA, Method, Unfreeze
from trainer.models.sources import Loaded, resolve_model


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The stack of transformer blocks (model.model.layers in llama, qwen2, gemma3 and phi)."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if isinstance(layers, torch.nn.ModuleList):
        return layers
    count = getattr(model.config, "num_hidden_layers", None)
    stacks = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == count]
    if not stacks:
        raise ConfigError(f"model {type(model).__name__}", ["no decoder-layer stack found (expected model.layers)"])
    return stacks[0]


def resolve_layers(spec: Layers, total: int, what: str, model_name: str) -> list[int]:
    """Indices as given; a relative depth d becomes round(d * total) (the notebook's 13/24 = 54%, 15/24 = 63%)."""
    resolved = [x if isinstance(x, int) else round(x * total) for x in spec]
    bad = [(x, r) for x, r in zip(spec, resolved) if not 0 <= r < total]
    if bad:
        raise ConfigError(f"{what} on {model_name}", [
            f"{x!r} is layer {r}, outside {model_name}'s {total} decoder layers; use an index in 0..{total - 1} "
            f"or a relative depth in (0, 1)" for x, r in bad])
    return sorted(set(resolved))


def apply_method(model: torch.nn.Module, method: Method, model_name: str, seed: int = 0) -> torch.nn.Module:
    """The model to train (LoRA wraps it in a peft model); freezes what the method does not train.
    `model_name` only names the model in errors; `seed` draws LoRA's random initial A matrices."""
    if isinstance(method, Full):
        return model
    total = len(decoder_layers(model))
    if isinstance(method, Unfreeze):
        chosen = resolve_layers(method.layers, total, "Unfreeze layers", model_name)
        model.requires_grad_(False)
        for index in chosen:
            decoder_layers(model)[index].requires_grad_(True)
        return model
    if isinstance(method, LoRA):
        # peft draws the adapters from the global generator: seeded here, a run's start does not depend on what
        # this process ran before it (an earlier run, a library's import), so a replay starts where the run did.
        with torch.random.fork_rng(devices=[]):  # the caller's generator is left as it was
            torch.manual_seed(seed)
            return _with_lora(model, method, total, model_name)
    raise ConfigError(f"method {method!r}", ["must be Full(), LoRA(...) or Unfreeze(...)"])


def load_base(exp: Experiment, device) -> Loaded:
    """The pretrained model `exp` starts from: in fp32, or with its linear layers quantized on `device`."""
    source = resolve_model(exp.model)
    return source.load_quantized(exp.quantize, device) if exp.quantize else source.load()


def prepare(model: torch.nn.Module, exp: Experiment) -> torch.nn.Module:
    """The model as `exp` trains it: its precision, recomputation and method (the planner traces this too)."""
    if exp.precision == "fp16":
        model = model.half()
    if exp.checkpointing:
        enable_recomputation(model)
    return apply_method(model, exp.method, exp.model, exp.seed)


def enable_recomputation(model: torch.nn.Module) -> None:
    """Activations are recomputed in backward; a KV cache is pointless in training and conflicts with it."""
    model.config.use_cache = False
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})


def trained_layers(model: torch.nn.Module) -> list[int]:
    """Decoder layers with a trainable parameter (for the record: what the method chose)."""
    return [i for i, layer in enumerate(decoder_layers(model)) if any(p.requires_grad for p in layer.parameters())]


def _with_lora(model: torch.nn.Module, method: LoRA, total: int, model_name: str) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    targets = method.targets if method.targets == "all-linear" else list(method.targets)
    if targets != "all-linear":
        available = linear_module_names(model)
        missing = sorted(set(targets) - available)
        if missing:
            raise ConfigError(f"LoRA targets on {model_name}", [
                f"{name!r} is not a linear module of {model_name}; its linear modules are {sorted(available)} "
                f"(or use \"all-linear\")" for name in missing])
    layers = None if method.layers is None else resolve_layers(method.layers, total, "LoRA layers", model_name)
    config = LoraConfig(r=method.rank, lora_alpha=method.alpha, lora_dropout=method.dropout,
                        target_modules=targets, layers_to_transform=layers, bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def linear_module_names(model: torch.nn.Module) -> set[str]:
    """Short names (q_proj, fc1, ...) of the linear modules inside the decoder layers."""
    return {name.rsplit(".", 1)[-1] for layer in decoder_layers(model)
            for name, module in layer.named_modules() if isinstance(module, torch.nn.Linear)}
