"""Memory of one real training step, traced by PyTorch's MemTracker, split into events that scale with depth.

With fake tensors (FakeTensorMode) nothing is allocated, so any architecture can be traced on this
machine; with real tensors the same code measures. Every event of a step (a module's forward or
backward peak, the optimizer step) holds bytes that are a linear function of the number of decoder
layers: the per-layer weights, gradients, optimizer state and saved activations add up, the rest
does not depend on depth. Tracing 1 and 2 layers therefore gives every event at any depth (within
2% of real traces of deeper models, tests/test_memory_planner.py);
the step's peak is the largest event. (Decoder layer k's backward sits between the top layer's,
first in backward, and the bottom layer's, last: its bytes are linear in k, so the top and bottom
layers bound all of them.)
"""

from __future__ import annotations

import re
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, fields

from trainer.experiment import Experiment

CATEGORIES = ("weights", "gradients", "optimizer", "activations", "temporaries")
_MEMTRACKER_CATEGORY = {"PARAM": "weights", "BUFFER": "weights", "GRAD": "gradients", "OPT": "optimizer",
                        "ACT": "activations", "TEMP": "temporaries", "OTH": "temporaries"}
_LAYER = re.compile(r"(?<![\w])layers\.(\d+)")


@dataclass(frozen=True)
class Footprint:
    """Bytes alive at one moment, by what they hold (MemTracker's categories, named for readers)."""

    weights: int = 0
    gradients: int = 0
    optimizer: int = 0
    activations: int = 0
    temporaries: int = 0

    @property
    def total(self) -> int:
        return sum(getattr(self, name) for name in CATEGORIES)

    @classmethod
    def of_snapshot(cls, snapshot: dict) -> Footprint:
        """From MemTracker's {device: {category: bytes}}, summed over devices."""
        parts = dict.fromkeys(CATEGORIES, 0)
        for device_snapshot in snapshot.values():
            for kind, size in device_snapshot.items():
                name = _MEMTRACKER_CATEGORY.get(str(kind).rsplit(".", 1)[-1])
                if name:
                    parts[name] += size
        return cls(**parts)

    def at_depth(self, two_layers: Footprint, layers: int) -> Footprint:
        """Self is this event at 1 layer: the same event at `layers` layers (linear in depth)."""
        return Footprint(**{f.name: getattr(self, f.name) + (layers - 1) * (getattr(two_layers, f.name)
                                                                            - getattr(self, f.name))
                            for f in fields(self)})


@dataclass(frozen=True)
class StepTrace:
    """The events of one training step (the second: optimizer state exists) and the trainable parameters."""

    events: dict[str, Footprint]
    trainable: int
    trainable_8bit_state: int  # bytes bitsandbytes' blockwise 8-bit AdamW would keep for these parameters
    # The frozen linear weights inside the decoder layers (what bitsandbytes quantizes under quantize=...):
    # their values and their output rows (LLM.int8() keeps one fp32 scale per row).
    frozen_linear_values: int = 0
    frozen_linear_rows: int = 0

    @property
    def peak_event(self) -> str:
        return max(self.events, key=lambda name: self.events[name].total)

    @property
    def peak(self) -> Footprint:
        return self.events[self.peak_event]

    def at_depth(self, two_layers: StepTrace, layers: int) -> StepTrace:
        shared = self.events.keys() & two_layers.events.keys()
        return StepTrace(
            events={name: self.events[name].at_depth(two_layers.events[name], layers) for name in shared},
            trainable=self.trainable + (layers - 1) * (two_layers.trainable - self.trainable),
            trainable_8bit_state=self.trainable_8bit_state
            + (layers - 1) * (two_layers.trainable_8bit_state - self.trainable_8bit_state),
            frozen_linear_values=self.frozen_linear_values
            + (layers - 1) * (two_layers.frozen_linear_values - self.frozen_linear_values),
            frozen_linear_rows=self.frozen_linear_rows
            + (layers - 1) * (two_layers.frozen_linear_rows - self.frozen_linear_rows))


def trace_step(config, exp: Experiment, batch: int, seq: int, *, fake: bool = True, foreach: bool = False,
               seed: int = 0) -> StepTrace:
    """Trace a training step, as the second one (optimizer state already there), under MemTracker.

    `foreach`: AdamW's multi-tensor path (PyTorch's default on CUDA) keeps whole-model temporaries
    during the step; the per-tensor loop (its default on CPU) does not.
    """
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.mem_tracker import MemTracker

    torch.manual_seed(seed)
    model = build_trainable(config, exp, on_meta=fake)  # meta before fake mode: peft needs it
    with FakeTensorMode() if fake else nullcontext(), warnings.catch_warnings():
        # MemTracker's own gradient hook finds None where a streamed gradient already left: expected.
        warnings.filterwarnings("ignore", message="Expected a tensor or a traceable wrapper-subclass")
        trainable, optimizer = prepare_training(model, exp, fake, foreach)
        ids = torch.randint(0, config.vocab_size, (batch, seq))
        create_optimizer_state(optimizer, trainable)  # as after a first step, without tracing one
        tracker = MemTracker()
        tracker.track_external(model, *([optimizer] if optimizer else []))
        with tracker:
            forward_backward(model, ids, exp)
        events = _module_events(tracker, config.num_hidden_layers)
        with tracker:  # re-entering starts a new peak from the bytes alive now
            optimizer_step(optimizer, trainable, exp)
        events["optimizer step"] = Footprint.of_snapshot(tracker.get_tracker_snapshot("peak"))
        return StepTrace(events, sum(p.numel() for p in trainable), _blockwise_8bit_bytes(trainable),
                         *frozen_linear_weights(model))


def prepare_training(model, exp: Experiment, fake: bool, foreach: bool, device: str = "cpu"):
    """Trainable parameters and device-side optimizer of a built model, as the experiment sets them up.

    With `fake`, call it under FakeTensorMode on a model built on the meta device: it gets fake
    storage. Otherwise the (randomly initialised) model moves to `device`.
    """
    if fake:
        materialize_meta(model)
    elif exp.offload == "fsdp2":  # a real sharded step: states on the host, layers gathered onto `device`
        return _sharded_training(model, exp, device)
    else:
        model.to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = device_optimizer(trainable, exp, foreach)
    if exp.offload in ("streaming", "fsdp2"):
        for parameter in trainable:  # each gradient leaves the device as soon as it is complete
            parameter.register_post_accumulate_grad_hook(drop_grad)
    return trainable, optimizer


def _sharded_training(model, exp: Experiment, device: str):
    """Training's own sharding (FSDP2 + CPUOffloadPolicy) and optimizer, in this process alone. A trace
    (fake tensors) cannot shard; it plans the offload recipe as if gradients left as they are made."""
    from trainer.training.optim import make_optimizer
    from trainer.training.sharding import shard

    shard(model, device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    return trainable, make_optimizer(trainable, exp.optimizer, exp.lr, exp.weight_decay)


def build_trainable(config, exp: Experiment, on_meta: bool = False):
    """The model as the experiment trains it (training's own `prepare`: precision, recomputation, method),
    randomly initialised from `config`. On the meta device nothing is allocated or initialised (peft then
    leaves its adapters there too)."""
    import torch
    from transformers import AutoModelForCausalLM

    from trainer.training.methods import prepare

    dtype = torch.float16 if exp.precision == "fp16" else torch.float32  # built in the dtype it trains in
    with torch.device("meta") if on_meta else nullcontext():
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model = prepare(model, exp)
    frozen_as_buffers(model)
    return model.train()


def frozen_as_buffers(model) -> None:
    """Frozen parameters become buffers: the same bytes, but MemTracker (which hooks every parameter's
    gradient) accepts them. Shared tensors (tied embeddings) stay shared."""
    as_buffer: dict[int, object] = {}
    for module in model.modules():
        for name, tensor in list(module._parameters.items()):
            if tensor is not None and not tensor.requires_grad:
                del module._parameters[name]
                module.register_buffer(name, as_buffer.setdefault(id(tensor), tensor.data))


def materialize_meta(model) -> None:
    """Give every meta parameter and buffer a storage of the ambient mode (fake tensors under FakeTensorMode).

    Shared parameters (tied embeddings) stay shared: one storage per distinct tensor.
    """
    import torch

    made: dict[int, torch.Tensor] = {}

    def fresh(tensor: torch.Tensor, parameter: bool) -> torch.Tensor:
        if id(tensor) not in made:
            empty = torch.empty(tensor.shape, dtype=tensor.dtype)
            made[id(tensor)] = torch.nn.Parameter(empty, tensor.requires_grad) if parameter else empty
        return made[id(tensor)]

    for module in model.modules():
        for name, tensor in module._parameters.items():
            if tensor is not None:
                module._parameters[name] = fresh(tensor, parameter=True)
        for name, tensor in module._buffers.items():
            if tensor is not None:
                module._buffers[name] = fresh(tensor, parameter=False)


def device_optimizer(trainable: list, exp: Experiment, foreach: bool):
    """The device-side optimizer (training's factory), or None where its state lives elsewhere (offload,
    8-bit: the planner adds those)."""
    from trainer.training.optim import make_optimizer

    if exp.offload or exp.optimizer == "adamw-8bit":
        return None
    return make_optimizer(trainable, exp.optimizer, exp.lr, exp.weight_decay, foreach=foreach)


def forward_backward(model, ids, exp: Experiment) -> None:
    import torch

    from trainer.training.placement import AUTOCAST_DTYPE as AUTOCAST

    dtype = AUTOCAST.get(exp.precision)
    with torch.autocast(ids.device.type, dtype=dtype, enabled=dtype is not None):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()


def optimizer_step(optimizer, trainable: list, exp: Experiment) -> None:
    import torch

    if optimizer is None:  # offloaded or 8-bit: the device only lets the gradients go
        for parameter in trainable:
            parameter.grad = None
        return
    if exp.clip is not None:
        torch.nn.utils.clip_grad_norm_(trainable, exp.clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def create_optimizer_state(optimizer, trainable: list) -> None:
    """The state a first step leaves (AdamW's moments, Adafactor's factors), from zero gradients."""
    import torch

    if optimizer is None:
        return
    for parameter in trainable:
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def drop_grad(parameter) -> None:
    parameter.grad = None


def _module_events(tracker, layers: int) -> dict[str, Footprint]:
    """Each module's forward and backward peak, decoder layers named by role (top / bottom) not index.

    Containers spanning all layers are left out: their peak is the largest of their layers' events,
    which is not linear in depth (the events inside are, and are kept). The root's forward peak (the
    end of the forward pass, loss included) is kept: memory only grows during the forward pass.
    """
    from torch.distributed._tools.mem_tracker import _ModState

    events: dict[str, Footprint] = {}
    for stats in tracker.memory_tracking.values():
        for name in _role_names(stats.mod_fqn, layers):
            for state, label in ((_ModState.PEAK_FW, "forward"), (_ModState.PEAK_BW, "backward")):
                snapshots = stats.snapshots.get(state, [])
                if snapshots and not (label == "backward" and name == "<root>"):
                    events[f"{label} {name}"] = max((Footprint.of_snapshot(s) for s in snapshots),
                                                    key=lambda f: f.total)
    return events


def _role_names(fqn: str, layers: int) -> list[str]:
    """'X' (the root) -> ['<root>']; 'X.model.layers.1' -> ['top layer'] when 1 is the top layer (a single
    layer is both top and bottom); modules inside a layer and containers spanning every layer -> []."""
    if fqn == "Global":
        return []
    short = fqn.split(".", 1)[1] if "." in fqn else ""
    if short == "":
        return ["<root>"]
    match = _LAYER.search(short)
    if match is None:
        return [] if _spans_layers(short) else [short]
    index, inside = int(match.group(1)), short[match.end():]
    if inside:  # a layer's own event spans its submodules'; theirs can outlive them under recomputation
        return []
    return [role for role, at in (("top layer", layers - 1), ("bottom layer", 0)) if index == at]


def _spans_layers(name: str) -> bool:
    """Containers whose forward/backward include every decoder layer (model, base_model.model.model, ...)."""
    return name.endswith("model") or name.endswith("layers")


def frozen_linear_weights(model) -> tuple[int, int]:
    """Values and output rows of the frozen linear weights inside the decoder layers (a LoRA's base layers)."""
    import torch

    from trainer.training.methods import decoder_layers

    values = rows = 0
    for layer in decoder_layers(model):
        for module in layer.modules():
            weight = getattr(module, "weight", None)
            if isinstance(module, torch.nn.Linear) and weight is not None and not weight.requires_grad:
                values, rows = values + weight.numel(), rows + weight.shape[0]
    return values, rows


def _blockwise_8bit_bytes(trainable: list) -> int:
    """bitsandbytes AdamW8bit: two uint8 moments + one fp32 absmax per 256-value block each,
    for tensors of 4096 values or more; smaller tensors keep two fp32 moments."""
    total = 0
    for parameter in trainable:
        count = parameter.numel()
        total += 2 * count + 2 * 4 * -(-count // 256) if count >= 4096 else 8 * count
    return total
