"""Named training recipes: Experiments a finding can name ("fp32-adamw", "fp32-offload-streaming", "lora-fp16", ...).

A recipe is only a name and a description for a set of Experiment fields (method, precision, optimizer,
offload, recomputation): the planner reads the same Experiment a finding trains, so any Experiment can
be planned, and a recipe is just a common one with a name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trainer.errors import ConfigError
from trainer.experiment import Experiment, Full, LoRA, Method


@dataclass(frozen=True)
class Recipe:
    """A named way to train, in Experiment's own words."""

    name: str
    description: str
    method: Method = field(default_factory=Full)
    precision: str = "fp32"
    optimizer: str = "adamw"
    offload: str | None = None
    checkpointing: bool = False
    quantize: str | None = None

    def experiment(self, model: str, **fields) -> Experiment:
        """This recipe on `model` (other Experiment fields may be given: lr, seed, ...)."""
        return Experiment(model=model, method=self.method, precision=self.precision, optimizer=self.optimizer,
                          offload=self.offload, checkpointing=self.checkpointing, quantize=self.quantize, **fields)

    def matches(self, exp: Experiment) -> bool:
        return all(getattr(self, name) == getattr(exp, name)
                   for name in ("method", "precision", "optimizer", "offload", "checkpointing", "quantize"))


NOTEBOOK_LORA = LoRA(rank=32, alpha=64, targets=("q_proj", "v_proj"))

RECIPES: dict[str, Recipe] = {r.name: r for r in [
    Recipe("fp32-adamw", "full fine-tuning, fp32 weights, AdamW (the notebook's setting)"),
    Recipe("amp-bf16", "fp32 master weights, bf16 autocast, AdamW", precision="bf16-autocast"),
    Recipe("amp-fp16", "fp32 master weights, fp16 autocast + GradScaler, AdamW", precision="fp16-autocast"),
    Recipe("adamw-8bit", "fp32 weights, 8-bit AdamW state (bitsandbytes, blockwise)", optimizer="adamw-8bit"),
    Recipe("fp32-offload", "fp32 weights on the device; gradients copied to the host after backward, "
                           "AdamW on the host (plain PyTorch)", offload="plain"),
    Recipe("fp32-offload-streaming", "fp32 weights on the device; each gradient streamed to the host as "
                                     "it is produced, AdamW on the host (DeepSpeed ZeRO-Offload style)",
           offload="streaming"),
    Recipe("fp32-offload-fsdp2", "fp32 weights, gradients and AdamW state on the host, sharded across processes; "
                                 "each layer's weights gathered onto the device for its forward and backward "
                                 "(FSDP2 + CPUOffloadPolicy: this one trains)", offload="fsdp2"),
    Recipe("grad-checkpointing", "fp32 AdamW, activations recomputed in backward", checkpointing=True),
    Recipe("lora-fp16", "LoRA r=32 on q,v (alpha 64); frozen base in fp16, adapter fp32, AdamW",
           method=NOTEBOOK_LORA, precision="fp16"),
    Recipe("lora-fp32", "LoRA r=32 on q,v (alpha 64); frozen base in fp32, AdamW", method=NOTEBOOK_LORA),
    Recipe("qlora-nf4", "LoRA r=32 on q,v (alpha 64); frozen base's linear layers in 4-bit NF4 with double "
                        "quantization (bitsandbytes, QLoRA), fp32 compute, AdamW",
           method=NOTEBOOK_LORA, quantize="nf4"),
    Recipe("qlora-int8", "LoRA r=32 on q,v (alpha 64); frozen base's linear layers in 8 bits (bitsandbytes "
                         "LLM.int8()), AdamW", method=NOTEBOOK_LORA, quantize="int8"),
    Recipe("sgd", "fp32 weights, plain SGD (no optimizer state), for contrast", optimizer="sgd"),
    Recipe("adafactor", "fp32 weights, Adafactor (factored second moment, no first moment)", optimizer="adafactor"),
]}


def recipe_named(name: str) -> Recipe:
    if name not in RECIPES:
        raise ConfigError(f"recipe {name!r}", [f"unknown; choose one of {list(RECIPES)}, or plan an "
                                               "Experiment(...) with the fields you want"])
    return RECIPES[name]


def as_experiment(subject: Experiment | str, recipe: str | None = None) -> Experiment:
    """An Experiment as given, or the named recipe (default "fp32-adamw") on the model `subject` names."""
    if isinstance(subject, Experiment):
        return subject
    return recipe_named(recipe or "fp32-adamw").experiment(subject)


def name_of(exp: Experiment) -> str:
    """The recipe's name when `exp` is one, else its memory fields in words (for tables and reports)."""
    named = next((r.name for r in RECIPES.values() if r.matches(exp)), None)
    if named:
        return named
    parts = [exp.method.kind, exp.precision, exp.optimizer] + ([f"offload={exp.offload}"] if exp.offload else []) \
        + (["recomputed"] if exp.checkpointing else []) + ([f"base={exp.quantize}"] if exp.quantize else [])
    return "/".join(parts)
