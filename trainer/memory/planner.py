"""The memory planner: bytes by part for an Experiment x batch x sequence length, on device and host.

The device side comes from tracing real training steps of the architecture at 1 and 2 decoder layers
(trainer.memory.trace, fake tensors: no weights, no memory) and extending every event to the full
depth. The host side holds what an offload recipe moves there. Overheads that no trace sees are
explicit and named: the CUDA context on a GPU, the allocator's slack on a CPU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from trainer.cache import store
from trainer.cache.keys import cache_path
from trainer.errors import ConfigError, ExpectationMisuse
from trainer.experiment import Experiment
from trainer.judgement import Judgement, judged
from trainer.memory import zero
from trainer.memory.recipes import as_experiment, name_of
from trainer.memory.trace import Footprint, StepTrace, trace_step
from trainer.models import configs as model_configs
from trainer.units import format_bytes, parse_bytes

# "optimizer" is its state (AdamW: two moments); "optimizer step" the update's temporaries (PyTorch's
# multi-tensor AdamW, its CUDA default, allocates a whole-model copy of the second moment's square root).
# "logits" is what does not grow with depth: embeddings' output, logits and loss buffers.
PARTS = ("weights", "gradients", "optimizer", "optimizer step", "activations", "logits", "overhead")
DEVICES = ("cuda", "cpu")
# A T4 reports 15,360 MiB and leaves about 14.5 GiB to tensors once the CUDA context is up (../shared/FACTS.md).
CUDA_CONTEXT_BYTES = 512 * 2**20
# CPU, measured here (benchmarks/memory_accuracy.py, freed blocks returned to the OS): a training process
# peaks above the traced tensors by the kernels' and thread pool's runtime memory plus, from the loss to
# the end of the backward pass, one fp32 logits-sized buffer that no tensor accounts for.
CPU_RUNTIME_BYTES = 64 * 2**20
# Code whose change changes a trace or a measurement: this package and how training applies a method.
TRACE_SOURCES = (Path(__file__).resolve().parent, Path(__file__).resolve().parent.parent / "training")


@dataclass(frozen=True)
class Plan:
    """Where the bytes of one training setup go at its peak; `fits(budget)` reads the device side."""

    model: str
    experiment: Experiment
    batch: int
    seq: int
    device: str
    parameters: int
    trainable: int
    peak_event: str
    device_parts: dict[str, int]
    host_parts: dict[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def device_total(self) -> int:
        return sum(self.device_parts.values())

    @property
    def host_total(self) -> int:
        return sum(self.host_parts.values())

    def fits(self, budget: str | int) -> bool:
        return self.device_total <= parse_bytes(budget)

    def headroom(self, budget: str | int) -> int:
        """Budget minus planned peak (negative: short by that much)."""
        return parse_bytes(budget) - self.device_total

    def judge_fits(self, budget: str | int) -> Judgement:
        """The device side of the plan fits in `budget`."""
        return judged(self.fits(budget), ("fits: " if self.fits(budget) else "does not fit: ") + self.words(budget))

    def judge_does_not_fit(self, budget: str | int) -> Judgement:
        return judged(not self.fits(budget), ("does not fit: " if not self.fits(budget) else "fits after all: ")
                      + self.words(budget))

    def judge_largest_part(self, part: str) -> Judgement:
        """`part` (a device part, or "host <part>") holds more bytes than any other."""
        parts = self.device_parts | {f"host {k}": v for k, v in self.host_parts.items()}
        if part not in parts:
            raise ExpectationMisuse(f"part {part!r} is not in a plan; parts are {list(parts)}")
        largest = max(parts, key=parts.get)
        return judged(largest == part, f"the largest part is {largest} ({format_bytes(parts[largest])})"
                                       f"{'' if largest == part else f', not {part} ({format_bytes(parts[part])})'}"
                                       f".\n{self.table()}")

    def words(self, budget: str | int) -> str:
        """The plan against a budget: headroom or shortfall, and the table."""
        headroom = self.headroom(budget)
        side = f"{format_bytes(headroom)} to spare" if headroom >= 0 else f"short by {format_bytes(-headroom)}"
        return f"{self.describe()}; budget {format_bytes(parse_bytes(budget))}: {side}.\n{self.table()}"

    def describe(self) -> str:
        where = "GPU" if self.device == "cuda" else "CPU"
        return (f"{self.model} / {self.recipe} (batch {self.batch} x {self.seq} tokens): "
                f"{format_bytes(self.device_total)} on the {where}"
                + (f", {format_bytes(self.host_total)} on the host" if self.host_parts else ""))

    def table(self) -> str:
        lines = [self.describe(), f"  {'part':14} {'device':>12} {'host':>12}"]
        for part in PARTS:
            host = self.host_parts.get(part)
            lines.append(f"  {part:14} {format_bytes(self.device_parts.get(part, 0)):>12} "
                         f"{format_bytes(host) if host else '-':>12}")
        lines.append(f"  peak at: {self.peak_event}; {self.trainable:,} of {self.parameters:,} parameters train")
        return "\n".join(lines + [f"  note: {note}" for note in self.notes])

    @property
    def recipe(self) -> str:
        return name_of(self.experiment)

    def as_dict(self) -> dict:
        data = asdict(self)
        data["experiment"] = self.experiment.memory_fields()
        data["recipe"] = self.recipe
        data["device_total"], data["host_total"] = self.device_total, self.host_total
        return data


def plan(experiment: Experiment | str, recipe: str | None = None, *, batch: int = 5, seq: int = 128,
         device: str = "cuda") -> Plan:
    """Plan the training step of `experiment` (the very Experiment a finding trains), or of a named recipe
    on a model: `plan("phi-2", "fp32-adamw")`. Traces are cached on disk: a repeated plan costs milliseconds."""
    exp = as_experiment(experiment, recipe)
    _check_request(exp, batch, seq, device)
    config = architecture_of(exp.model)
    trace = traced_at_depth(config, exp, batch, seq, foreach=device == "cuda")
    parameters = model_configs.parameter_count(config)
    return _assemble(exp, batch, seq, device, parameters, trace, config.num_hidden_layers, config.vocab_size)


def architecture_of(model: str):
    from trainer.models.sources import resolve_model

    return resolve_model(model).architecture()


def traced_at_depth(config, exp: Experiment, batch: int, seq: int, foreach: bool) -> dict:
    """Events at 1 and 2 layers (cached), plus the full depth's events."""
    one, two = (_cached_trace(model_configs.with_layers(config, n), exp, batch, seq, foreach) for n in (1, 2))
    return {"one": one, "two": two, "full": one.at_depth(two, config.num_hidden_layers)}


def _assemble(exp: Experiment, batch, seq, device, parameters, trace, layers, vocab) -> Plan:
    full: StepTrace = trace["full"]
    loss_buffer = 4 * batch * seq * vocab

    def overhead_at(name: str) -> int:
        # Measured (benchmarks/memory_accuracy.py): the CPU's extra buffer stays until the backward pass ends.
        return _overhead(device, loss_buffer if name != "optimizer step" else 0)

    event = max(full.events, key=lambda name: full.events[name].total + overhead_at(name))
    peak: Footprint = full.events[event]
    state = full.events["forward <root>"].optimizer  # alive throughout the second step
    per_layer = _activation_bytes(trace["two"].events[event]) - _activation_bytes(trace["one"].events[event])
    in_flight = _activation_bytes(peak)
    activations = min(in_flight, max(0, layers * per_layer))
    parts = {"weights": peak.weights, "gradients": peak.gradients, "optimizer": min(state, peak.optimizer),
             "optimizer step": max(0, peak.optimizer - state), "activations": activations,
             "logits": in_flight - activations}
    host, notes = _offloaded_state(exp, full)
    if exp.offload == "fsdp2":
        parts |= _gathered_on_device(exp)
        notes.append("fsdp2: the root group (embeddings, head, final norm) stays gathered from forward to backward; "
                     "two decoder layers' weights (one prefetched) and one layer's gradients at a time")
    if exp.quantize:
        stored = quantized_bytes(full, exp.quantize)
        parts["weights"] -= zero.FP32 * full.frozen_linear_values - stored
        notes.append(f"quantize={exp.quantize}: the decoder layers' frozen linear weights "
                     f"({full.frozen_linear_values:,} values) in {format_bytes(stored)} "
                     "(bitsandbytes' layout, computed, not traced); one dequantized fp32 weight at a time not counted")
    if exp.optimizer == "adamw-8bit":
        parts["optimizer"] += full.trainable_8bit_state
        notes.append("8-bit AdamW state is computed from bitsandbytes' blockwise layout, not traced")
    parts["overhead"] = overhead_at(event)
    notes.append(_overhead_note(device, event != "optimizer step"))
    return Plan(exp.model, exp, batch, seq, device, parameters, full.trainable, event, parts, host, tuple(notes))


def quantized_bytes(trace: StepTrace, quantize: str) -> int:
    """bitsandbytes' storage of the frozen linear weights: NF4 packs two values a byte, with one 8-bit scale per
    block of 64 and one fp32 scale per 256 of those (double quantization); LLM.int8() one byte a value and one
    fp32 scale per output row."""
    values = trace.frozen_linear_values
    if quantize == "nf4":
        blocks = -(-values // 64)
        return -(-values // 2) + blocks + zero.FP32 * -(-blocks // 256)
    return values + zero.FP32 * trace.frozen_linear_rows


def _activation_bytes(footprint: Footprint) -> int:
    return footprint.activations + footprint.temporaries


def _offloaded_state(exp: Experiment, full: StepTrace) -> tuple[dict, list[str]]:
    """Host bytes of an offloading recipe: fp32 master weights, gradients and AdamW moments."""
    if not exp.offload:
        return {}, []
    trainable = full.trainable
    return ({"weights": zero.FP32 * trainable, "gradients": zero.FP32 * trainable,
             "optimizer": zero.ADAM_MOMENTS * trainable},
            [f"{exp.offload} offload: fp32 master weights, gradients and AdamW moments live on the host"])


def _gathered_on_device(exp: Experiment) -> dict[str, int]:
    """FSDP2 with host offload: what is gathered on the device at the peak, in fp32 (a trace cannot see it:
    sharding needs a process group)."""
    layer, outside = model_configs.decoder_layer_parameters(architecture_of(exp.model))
    return {"weights": zero.FP32 * (outside + 2 * layer), "gradients": zero.FP32 * (outside + layer),
            "optimizer": 0, "optimizer step": 0}


def model_states(model: str) -> list[str]:
    """The parameter count and model-state bytes (fp32 AdamW, and DeepSpeed's 16-bit ZeRO placements)."""
    config = architecture_of(model)
    return zero.model_state_lines(model_configs.parameter_count(config),
                                  model_configs.largest_module_parameters(config))


def _overhead(device: str, loss_buffer: int) -> int:
    return CUDA_CONTEXT_BYTES if device == "cuda" else CPU_RUNTIME_BYTES + loss_buffer


def _overhead_note(device: str, loss_alive: bool) -> str:
    if device == "cuda":
        return f"overhead = CUDA context ({format_bytes(CUDA_CONTEXT_BYTES)}; a T4 leaves ~14.5 GiB to tensors)"
    return (f"overhead = CPU runtime ({format_bytes(CPU_RUNTIME_BYTES)})"
            + (" + one untracked fp32 logits-sized buffer during backward (batch x seq x vocab x 4 B)" if loss_alive
               else "") + ", measured on this machine with freed blocks returned to the OS")


def _check_request(exp: Experiment, batch: int, seq: int, device: str) -> None:
    problems = []
    for name, value in (("batch", batch), ("seq", seq)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            problems.append(f"{name}={value!r}: must be an integer >= 1")
    if device not in DEVICES:
        problems.append(f"device={device!r}: must be one of {list(DEVICES)}")
    if getattr(exp.method, "layers", None) is not None:
        problems.append(f"method={exp.method!r} trains chosen layers only; the planner extends a 1- and a 2-layer "
                        "trace to full depth, which holds when every layer trains alike: plan Full() or LoRA "
                        "without layers= (an upper bound), or measure_memory() the experiment")
    if exp.offload and device == "cpu":
        problems.append(f"offload={exp.offload!r} ({name_of(exp)}) moves state from an accelerator to the host; "
                        "plan it with device='cuda'")
    if problems:
        raise ConfigError(f"memory plan for {exp.model!r}", problems)


def _cached_trace(config, exp: Experiment, batch: int, seq: int, foreach: bool) -> StepTrace:
    """Keyed on what decides a step's bytes (the architecture and the experiment's memory fields), so every
    learning rate, seed and model name of one architecture shares a trace."""
    path = cache_path("memory-traces", {"config": config.to_dict(), "memory": exp.memory_fields(), "batch": batch,
                                        "seq": seq, "foreach": foreach}, sources=TRACE_SOURCES)
    cached = store.read_record_or_quarantine(path)
    if cached is not None:
        return _trace_from_json(cached)
    trace = trace_step(config, exp, batch, seq, foreach=foreach)
    store.write_record(path, _trace_to_json(trace))
    return trace


def _trace_to_json(trace: StepTrace) -> dict:
    return {"events": {name: asdict(f) for name, f in trace.events.items()}, "trainable": trace.trainable,
            "trainable_8bit_state": trace.trainable_8bit_state, "frozen_linear_values": trace.frozen_linear_values,
            "frozen_linear_rows": trace.frozen_linear_rows}


def _trace_from_json(data: dict) -> StepTrace:
    return StepTrace({name: Footprint(**f) for name, f in data["events"].items()}, int(data["trainable"]),
                     int(data["trainable_8bit_state"]), int(data["frozen_linear_values"]),
                     int(data["frozen_linear_rows"]))
