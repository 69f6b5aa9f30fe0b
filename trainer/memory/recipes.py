"""How a model is trained, as far as memory is concerned: precision, optimizer, offload, recomputation, LoRA.

Each preset is a name a finding can declare ("fp32-adamw", "fp32-offload-streaming", "lora-fp16", ...);
`Strategy` itself can be built for combinations the presets do not name.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainer.errors import ConfigError
from trainer.experiment import LoRA

OPTIMIZERS = ("adamw", "adamw-8bit", "sgd", "adafactor")
DTYPES = ("fp32", "bf16", "fp16")
AUTOCASTS = (None, "bf16", "fp16")
OFFLOADS = (None, "plain", "streaming")


@dataclass(frozen=True)
class Strategy:
    """One way to train: where each byte lives follows from these fields.

    `params` is the dtype the model is held in (a LoRA base may be half; full fine-tuning in half
    is the seed's NaN trap). `offload="plain"` keeps gradients on the accelerator until the step and
    then copies them to the host, where the optimizer runs (plain PyTorch); `"streaming"` moves each
    gradient out as soon as it is accumulated (DeepSpeed ZeRO-Offload style).
    """

    name: str
    description: str
    optimizer: str = "adamw"
    params: str = "fp32"
    autocast: str | None = None
    offload: str | None = None
    checkpointing: bool = False
    lora: LoRA | None = None

    def __post_init__(self) -> None:
        checks = [
            (self.optimizer in OPTIMIZERS, f"optimizer={self.optimizer!r}: must be one of {list(OPTIMIZERS)}"),
            (self.params in DTYPES, f"params={self.params!r}: must be one of {list(DTYPES)}"),
            (self.autocast in AUTOCASTS, f"autocast={self.autocast!r}: must be one of {list(AUTOCASTS)}"),
            (self.offload in OFFLOADS, f"offload={self.offload!r}: must be one of {list(OFFLOADS)}"),
            (self.lora is None or isinstance(self.lora, LoRA), f"lora={self.lora!r}: must be None or LoRA(...)"),
        ]
        problems = [message for ok, message in checks if not ok]
        problems += self.lora.problems() if isinstance(self.lora, LoRA) else []
        if problems:
            raise ConfigError(f"Strategy {self.name!r}", problems)


SEED_LORA = LoRA(rank=32, alpha=64, targets=("q_proj", "v_proj"))

PRESETS: dict[str, Strategy] = {s.name: s for s in [
    Strategy("fp32-adamw", "full fine-tuning, fp32 weights, AdamW (the seed's setting)"),
    Strategy("amp-bf16", "fp32 master weights, bf16 autocast, AdamW", autocast="bf16"),
    Strategy("amp-fp16", "fp32 master weights, fp16 autocast + GradScaler, AdamW", autocast="fp16"),
    Strategy("adamw-8bit", "fp32 weights, 8-bit AdamW state (bitsandbytes, blockwise)", optimizer="adamw-8bit"),
    Strategy("fp32-offload", "fp32 weights on the device; gradients copied to the host after backward, "
                             "AdamW on the host (plain PyTorch)", offload="plain"),
    Strategy("fp32-offload-streaming", "fp32 weights on the device; each gradient streamed to the host as "
                                       "it is produced, AdamW on the host (DeepSpeed ZeRO-Offload style)",
             offload="streaming"),
    Strategy("grad-checkpointing", "fp32 AdamW, activations recomputed in backward", checkpointing=True),
    Strategy("lora-fp16", "LoRA r=32 on q,v (alpha 64); frozen base in fp16, adapter fp32, AdamW",
             params="fp16", lora=SEED_LORA),
    Strategy("lora-fp32", "LoRA r=32 on q,v (alpha 64); frozen base in fp32, AdamW", lora=SEED_LORA),
    Strategy("sgd", "fp32 weights, plain SGD (no optimizer state), for contrast", optimizer="sgd"),
    Strategy("adafactor", "fp32 weights, Adafactor (factored second moment, no first moment)",
             optimizer="adafactor"),
]}


def strategy_named(name: str | Strategy) -> Strategy:
    if isinstance(name, Strategy):
        return name
    if name not in PRESETS:
        raise ConfigError(f"strategy {name!r}", [f"unknown; choose one of {list(PRESETS)} "
                                                 "or build trainer.memory.recipes.Strategy(...)"])
    return PRESETS[name]
