"""What a test asks for: one frozen, validated description of a fine-tuning run."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from trainer.errors import ConfigError, SuiteError

DataSplit = Literal["train", "control"]
DATA_SPLITS: tuple[str, ...] = ("train", "control")


@dataclass(frozen=True)
class Full:
    """Full fine-tuning: every parameter trains."""

    kind: Literal["full"] = "full"

    def problems(self) -> list[str]:
        return []


Layers = tuple[int | float, ...]  # decoder-layer indices (0-based), or relative depths in (0, 1)


@dataclass(frozen=True)
class LoRA:
    """Low-rank adapters through peft; only the adapter trains and is checkpointed.

    `targets`: module names (e.g. ("q_proj", "v_proj")) or "all-linear" (every linear layer but the
    output head). `layers`: adapt only these decoder layers ("surgical LoRA"); None adapts all.
    """

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: str | tuple[str, ...] = "all-linear"
    layers: Layers | None = None
    kind: Literal["lora"] = "lora"

    def problems(self) -> list[str]:
        checks = [
            (_is_int(self.rank) and self.rank >= 1, f"LoRA rank={self.rank!r}: must be an integer >= 1, e.g. 8 or 32"),
            (_is_number(self.alpha) and self.alpha > 0,
             f"LoRA alpha={self.alpha!r}: must be a number > 0, e.g. 2*rank"),
            (_is_number(self.dropout) and 0 <= self.dropout < 1, f"LoRA dropout={self.dropout!r}: must be in [0, 1)"),
            (self.targets == "all-linear" or (isinstance(self.targets, tuple) and self.targets
                                              and all(isinstance(t, str) and t for t in self.targets)),
             f"LoRA targets={self.targets!r}: must be \"all-linear\" or a tuple of module names, e.g. "
             f"(\"q_proj\", \"v_proj\")"),
        ]
        problems = [message for ok, message in checks if not ok]
        return problems + ([] if self.layers is None else layer_problems("LoRA layers", self.layers))


@dataclass(frozen=True)
class Unfreeze:
    """Selective unfreezing: only the listed decoder layers train; everything else stays frozen."""

    layers: Layers = ()
    kind: Literal["unfreeze"] = "unfreeze"

    def problems(self) -> list[str]:
        return layer_problems("Unfreeze layers", self.layers)


Method = Full | LoRA | Unfreeze
METHODS = (Full, LoRA, Unfreeze)


def layer_problems(what: str, layers: object) -> list[str]:
    """Indices must be ints >= 0 and depths floats in (0, 1); the model's layer count is checked when it loads."""
    if not isinstance(layers, tuple) or not layers:
        return [f"{what}={layers!r}: must be a non-empty tuple of layer indices (0, 1, ...) or relative depths "
                f"in (0, 1), e.g. (13, 15) or (0.54, 0.63)"]
    bad = [x for x in layers if not ((_is_int(x) and x >= 0) or (isinstance(x, float) and 0 < x < 1))]
    return [f"{what}: {x!r} is neither a layer index >= 0 nor a relative depth in (0, 1)" for x in bad]


PRECISIONS: tuple[str, ...] = ("fp32", "bf16-autocast", "fp16-autocast", "fp16")
NONFINITE_POLICIES: tuple[str, ...] = ("stop", "continue")
OPTIMIZERS: tuple[str, ...] = ("adamw", "sgd", "adafactor", "adamw-8bit")
# "plain" and "streaming" are planned only; "fsdp2" trains (FSDP2 with CPU offload, trainer.training.sharding).
OFFLOADS: tuple[str | None, ...] = (None, "plain", "streaming", "fsdp2")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")
# A frozen base stored in fewer bits (bitsandbytes): "nf4" is QLoRA's 4-bit NormalFloat with double
# quantization, "int8" LLM.int8(). Only an adapter trains around it (trainer.models.quantized).
QUANTIZATIONS: tuple[str | None, ...] = (None, "nf4", "int8")
# Fields added after runs were keyed: they enter a key (run or memory trace) only when set, so older keys stay.
KEYED_WHEN_SET: tuple[str, ...] = ("quantize", "placebo_after")
# The fields that decide where a training step's bytes live (the memory planner's whole vocabulary).
MEMORY_FIELDS: tuple[str, ...] = ("method", "precision", "optimizer", "offload", "checkpointing", "clip", "quantize")


def method_from_fields(fields: dict) -> Method:
    """A method from its asdict() form (JSON lists back to tuples), e.g. {"kind": "lora", "rank": 32, ...}."""
    kinds = {cls.kind: cls for cls in (Full, LoRA, Unfreeze)}  # each class's default `kind`
    values = dict(fields)
    kind = values.pop("kind", None)
    if kind not in kinds:
        raise ConfigError(f"method {fields!r}", [f"kind={kind!r}: must be one of {list(kinds)}"])
    return kinds[kind](**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


@dataclass(frozen=True)
class Experiment:
    """One fine-tuning run: model x method x behavior data x hyperparameters x seed.

    `epochs` is deliberately not part of the cache key: a longer request resumes a shorter
    cached run of the same experiment (the learning rate is constant, so the first N epochs
    of a long run are the N epochs of a short one).

    `seed` 0 trains on the examples as written (the notebook's recipe). With five examples in one
    full batch, a seed that only reordered them would change nothing, so seeds >= 1 train on a
    seeded bootstrap resample of the examples (same count, drawn with replacement): replicate
    runs then vary in what they learn from, which is the variation a finding must survive.
    `generate=False` skips greedy generation at evaluated epochs (margins and KL only), which
    halves the probe time of replicate seeds whose verdict reads the margins alone.
    `resumable=False` writes no checkpoint at the last epoch, only the record: for a request nothing will
    go on from (a question's last look, see Trial). Like `epochs` it is not part of the key; a later, longer
    request then trains the recorded epochs again without probing them, and goes on from there.
    """

    model: str
    behavior: str = "epistemic-stance"
    method: Method = field(default_factory=Full)
    epochs: int = 10
    eval_every: int = 2
    lr: float = 1e-5
    clip: float | None = 1.0
    batch_size: int = 5
    weight_decay: float = 0.0
    seed: int = 0
    data: DataSplit = "train"
    gen_tokens: int = 24
    generate: bool = True
    precision: str = "fp32"
    grad_scaler: bool | None = None  # None: on exactly for fp16-autocast
    on_nonfinite: str = "stop"
    optimizer: str = "adamw"
    offload: str | None = None  # None; "fsdp2" trains sharded with host offload; "plain"/"streaming" are planned only
    checkpointing: bool = False  # recompute activations in backward (gradient checkpointing)
    device: str = "auto"  # "auto": --ft-device if given, else CUDA, then MPS, then the CPU
    processes: int | None = None  # data-parallel processes at the same global batch; None: --ft-processes, else 1
    resumable: bool = True  # keep a checkpoint at the last epoch, for a longer request to go on from
    quantize: str | None = None  # None; "nf4" or "int8": the frozen base in 4 or 8 bits (LoRA only; QLoRA)
    placebo_after: int | None = None  # train on `data` through this epoch, then on the control data (undoing)

    def __post_init__(self) -> None:
        problems = self._field_problems()
        problems += self._reference_problems()
        if problems:
            raise ConfigError(f"Experiment(model={self.model!r}, behavior={self.behavior!r})", problems)

    def _field_problems(self) -> list[str]:
        checks = [
            (_is_int(self.epochs) and self.epochs >= 1, f"epochs={self.epochs!r}: must be an integer >= 1"),
            (_is_int(self.eval_every) and self.eval_every >= 1,
             f"eval_every={self.eval_every!r}: must be an integer >= 1 (evaluate every K epochs)"),
            (_is_number(self.lr) and self.lr >= 0,
             f"lr={self.lr!r}: must be a number >= 0 (0 is the lr=0 null control)"),
            (self.clip is None or (_is_number(self.clip) and self.clip > 0),
             f"clip={self.clip!r}: must be a number > 0, or None to disable gradient clipping"),
            (_is_int(self.batch_size) and self.batch_size >= 1,
             f"batch_size={self.batch_size!r}: must be an integer >= 1"),
            (_is_number(self.weight_decay) and self.weight_decay >= 0,
             f"weight_decay={self.weight_decay!r}: must be a number >= 0"),
            (_is_int(self.seed) and self.seed >= 0, f"seed={self.seed!r}: must be an integer >= 0"),
            (self.data in DATA_SPLITS, f"data={self.data!r}: must be one of {list(DATA_SPLITS)}"),
            (_is_int(self.gen_tokens) and 1 <= self.gen_tokens <= 256,
             f"gen_tokens={self.gen_tokens!r}: must be an integer in [1, 256]"),
            (isinstance(self.generate, bool), f"generate={self.generate!r}: must be True or False"),
            (isinstance(self.method, METHODS), f"method={self.method!r}: must be Full(), LoRA(...) or Unfreeze(...)"),
            (self.precision in PRECISIONS, f"precision={self.precision!r}: must be one of {list(PRECISIONS)}"),
            (self.grad_scaler is None or isinstance(self.grad_scaler, bool),
             f"grad_scaler={self.grad_scaler!r}: must be True, False or None (on for fp16-autocast only)"),
            (self.on_nonfinite in NONFINITE_POLICIES,
             f"on_nonfinite={self.on_nonfinite!r}: must be one of {list(NONFINITE_POLICIES)}"),
            (self.optimizer in OPTIMIZERS, f"optimizer={self.optimizer!r}: must be one of {list(OPTIMIZERS)}"),
            (self.offload in OFFLOADS, f"offload={self.offload!r}: must be one of {list(OFFLOADS)}"),
            (isinstance(self.checkpointing, bool), f"checkpointing={self.checkpointing!r}: must be True or False"),
            (self.device in DEVICES, f"device={self.device!r}: must be one of {list(DEVICES)}"),
            (self.processes is None or (_is_int(self.processes) and self.processes >= 1),
             f"processes={self.processes!r}: must be an integer >= 1, or None for --ft-processes (default 1)"),
            (isinstance(self.resumable, bool), f"resumable={self.resumable!r}: must be True or False"),
            (self.quantize in QUANTIZATIONS, f"quantize={self.quantize!r}: must be one of {list(QUANTIZATIONS)}"),
            (self.placebo_after is None or (_is_int(self.placebo_after) and self.placebo_after >= 1),
             f"placebo_after={self.placebo_after!r}: must be None or an epoch >= 1 (the last epoch on the "
             f"training data; later epochs train on the placebo)"),
            (self.placebo_after is None or self.data == "train",
             f"placebo_after={self.placebo_after!r} with data={self.data!r}: the switch is from the behavior's "
             f"training data to its placebo; use data='train'"),
        ]
        problems = [message for ok, message in checks if not ok]
        problems += self._quantize_problems() if self.quantize in QUANTIZATIONS[1:] else []
        return problems + (self.method.problems() if isinstance(self.method, METHODS) else [])

    def _quantize_problems(self) -> list[str]:
        """A quantized base is frozen in a storage format that has no gradient: only an adapter trains, in fp32,
        unsharded (bitsandbytes' layers are neither autocast nor sharded here)."""
        what = f"quantize={self.quantize!r}"
        checks = [
            (isinstance(self.method, LoRA), f"{what} with method={self.method!r}: a quantized base cannot train; "
                                            "use method=LoRA(...) (QLoRA), or quantize=None"),
            (self.precision == "fp32", f"{what} with precision={self.precision!r}: the adapter and the unquantized "
                                       "parts train in fp32 (the quantized layers compute as bitsandbytes does); "
                                       "use precision='fp32'"),
            (self.offload is None, f"{what} with offload={self.offload!r}: a quantized base is not sharded or "
                                   "offloaded; use offload=None"),
            (self.optimizer == "adamw", f"{what} with optimizer={self.optimizer!r}: QLoRA's recipe is AdamW on the "
                                        "adapter, the only one tested with a quantized base; use optimizer='adamw'"),
        ]
        return [message for ok, message in checks if not ok]

    @property
    def uses_grad_scaler(self) -> bool:
        return self.precision == "fp16-autocast" if self.grad_scaler is None else self.grad_scaler

    def _reference_problems(self) -> list[str]:
        """Model and behavior must resolve; cheap (no weights are read)."""
        from trainer.behavior import load_behavior
        from trainer.models.sources import resolve_model

        problems = []
        for resolve, value in ((resolve_model, self.model), (load_behavior, self.behavior)):
            try:
                resolve(value)
            except (SuiteError, ValueError, KeyError) as error:
                problems.append(str(error))
        if not problems and self.precision.startswith("fp16") and resolve_model(self.model).fp16_overflows:
            problems.append(f"precision={self.precision!r}: {self.model} overflows in fp16 (its activations exceed "
                            f"fp16's 65504); use 'fp32' or 'bf16-autocast'")
        return problems

    def key_fields(self) -> dict:
        """Every field that changes the outcome of the first N epochs (so not `epochs`, nor `resumable`).
        `quantize` and `placebo_after` enter only when set, so runs keyed before they existed keep their keys."""
        fields = dataclasses.asdict(self)
        fields.pop("epochs")
        fields.pop("resumable")
        return {name: value for name, value in fields.items() if name not in KEYED_WHEN_SET or value is not None}

    def memory_fields(self) -> dict:
        """What decides a step's bytes besides the model and the batch (JSON-able; see MEMORY_FIELDS)."""
        fields = dataclasses.asdict(self)
        return {name: fields[name] for name in MEMORY_FIELDS if name not in KEYED_WHEN_SET or fields[name] is not None}

    @classmethod
    def from_fields(cls, fields: dict) -> Experiment:
        """An Experiment from its asdict() form (e.g. JSON handed to a training process)."""
        return cls(**{**fields, "method": method_from_fields(fields["method"])})

    def control(self) -> Experiment:
        """The null control: the same run on the behavior's neutral (placebo) data, every epoch (for a run that
        switches to the placebo, the same number of epochs on the placebo alone: the band it should return to)."""
        return dataclasses.replace(self, data="control", placebo_after=None)

    def data_at(self, epoch: int) -> DataSplit:
        """The data epoch `epoch` (1-based) trains on: `data`, or the placebo after `placebo_after`."""
        return "control" if self.placebo_after is not None and epoch > self.placebo_after else self.data

    def with_epochs(self, epochs: int, resumable: bool = True) -> Experiment:
        return dataclasses.replace(self, epochs=epochs, resumable=resumable)

    def with_seed(self, seed: int, generate: bool | None = None) -> Experiment:
        return dataclasses.replace(self, seed=seed, generate=self.generate if generate is None else generate)

    def evaluated_epochs(self) -> list[int]:
        """Epoch 0 (baseline), every `eval_every`-th epoch, and always the last one."""
        epochs = list(range(0, self.epochs + 1, self.eval_every))
        return epochs if epochs[-1] == self.epochs else epochs + [self.epochs]

    @property
    def recipe(self) -> str:
        """What trains, at which lr, in words (tells apart the configurations of a sweep)."""
        method = self.method
        if isinstance(method, LoRA):
            targets = method.targets if isinstance(method.targets, str) else "+".join(method.targets)
            where = f", layers {list(method.layers)}" if method.layers else ""
            base = f" on a {self.quantize} base" if self.quantize else ""
            trained = f"LoRA r={method.rank} (alpha {method.alpha:g}) on {targets}{where}{base}"
        elif isinstance(method, Unfreeze):
            trained = f"unfreezing layers {list(method.layers)}"
        else:
            trained = "full fine-tuning"
        return f"{trained}, lr={self.lr:g}"

    @property
    def label(self) -> str:
        precision = "" if self.precision == "fp32" else f"/{self.precision}"
        precision += f"/{self.quantize}" if self.quantize else ""
        data = self.data + (f"-then-control@{self.placebo_after}" if self.placebo_after else "")
        return f"{self.model}/{self.method.kind}{precision}/{self.behavior}:{data}/lr={self.lr:g}/seed={self.seed}"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
