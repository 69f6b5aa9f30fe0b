"""Measured peak memory of real training steps, each in a fresh process, out-of-memory included.

CPU: growth of the process's peak resident memory (VmHWM) over its size before the model was built.
CUDA: `torch.cuda.max_memory_allocated`, optionally under a cap (`set_per_process_memory_fraction`),
so a 15 GB card can be imitated on a larger one. Weights are randomly initialised from the
architecture's config: the same bytes as pretrained ones, and no weights need to be on disk.
Running out of memory is a result (`out_of_memory` holds the error), never a crash of the caller.

`python -m trainer.memory.measure '{"model": "smollm2-135m", "memory": {...}, ...}'` prints one JSON line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

from trainer.cache import store
from trainer.cache.keys import cache_path
from trainer.errors import ConfigError, ExpectationMisuse, SuiteError
from trainer.experiment import Experiment, method_from_fields
from trainer.judgement import Judgement, judged
from trainer.memory.planner import TRACE_SOURCES, architecture_of
from trainer.memory.recipes import as_experiment, name_of
from trainer.units import format_bytes, parse_bytes

# AdamW keeps two moments per parameter (2.0x) plus a 4-byte step counter per tensor: 5% covers the
# counters and rounding of small models without admitting another optimizer's ratio (Adafactor < 1x).
STATE_RATIO_TOLERANCE = 0.05


@dataclass(frozen=True)
class Measured:
    model: str
    recipe: str  # the recipe's name, or the experiment's memory fields in words
    batch: int
    seq: int
    device: str
    peak_bytes: int | None  # None when the run did not finish a step
    trainable_bytes: int = 0  # bytes of the parameters that train
    optimizer_state_bytes: int = 0  # bytes of every tensor in the optimizer's state after the steps
    out_of_memory: str | None = None
    limit_bytes: int | None = None
    seconds: float = 0.0
    killed: bool = False  # the OS killed the process (out of memory, most likely): not kept in the cache
    reached_bytes: int | None = None  # when it ran out: the peak it had reached

    @property
    def optimizer_to_parameters(self) -> float:
        return self.optimizer_state_bytes / self.trainable_bytes if self.trainable_bytes else float("nan")

    def describe(self) -> str:
        return f"{self.model} / {self.recipe} (batch {self.batch} x {self.seq}, {self.device})"

    def judge_fits(self, budget: str | int) -> Judgement:
        """The run finished its steps and peaked within the budget (running out is the failure, with its figure)."""
        limit = parse_bytes(budget)
        if self.out_of_memory:
            reached = f" after reaching {format_bytes(self.reached_bytes)}" if self.reached_bytes else ""
            return judged(False, f"{self.describe()} ran out of memory under a {format_bytes(limit)} cap{reached}: "
                                 f"{self.out_of_memory}")
        holds = self.peak_bytes <= limit
        return judged(holds, f"{self.describe()} peaked at {format_bytes(self.peak_bytes)}, "
                             f"{'within' if holds else 'above'} {format_bytes(limit)}")

    def judge_optimizer_state(self, times: float, tolerance: float = STATE_RATIO_TOLERANCE) -> Judgement:
        """Optimizer state bytes / trained parameter bytes after real steps is `times` (within `tolerance`)."""
        if self.out_of_memory:
            raise ExpectationMisuse(f"{self.describe()} ran out of memory; no optimizer state to weigh")
        ratio = self.optimizer_to_parameters
        holds = abs(ratio - times) <= tolerance * times
        return judged(holds, f"{self.describe()}: optimizer state {format_bytes(self.optimizer_state_bytes)} is "
                             f"{ratio:.3f}x the {format_bytes(self.trainable_bytes)} of trained parameters, "
                             f"{'' if holds else 'not '}{times:g}x (+-{tolerance:.0%})")


def measure(experiment: Experiment | str, recipe: str | None = None, *, batch: int = 5, seq: int = 128,
            device: str = "cpu", limit: str | int | None = None, steps: int = 2, release_freed: bool = True,
            cached: bool = True, timeout: float = 1800) -> Measured:
    """Train `steps` steps in a fresh process and report its peak; the OS killing it counts as out of memory.

    `release_freed` (CPU): glibc returns every freed block of 64 KiB or more to the OS at once
    (MALLOC_MMAP_THRESHOLD_), so the peak counts live memory, as CUDA's max_memory_allocated does.
    With glibc's default, freed activations stay in the heap and fragment it: the same step then
    peaks 1-18% higher on this machine (benchmarks/memory_accuracy.py reports both).
    `cached`: a finished measurement (out of memory included) is kept beside the run cache and reused
    while the architecture, request, libraries and this code are unchanged; a run the OS killed is not.
    """
    exp = as_experiment(experiment, recipe)
    if exp.quantize:
        raise ConfigError(f"measure_memory of {exp.model!r} with quantize={exp.quantize!r}", [
            "a measured step builds random weights from the architecture, while bitsandbytes quantizes stored "
            "weights as they load: plan it (plan(...), the quantized bytes computed from bitsandbytes' layout), "
            "or train it with finetune(Experiment(..., quantize=...))"])
    request = {"model": exp.model, "recipe": name_of(exp), "memory": exp.memory_fields(), "lr": exp.lr,
               "batch": batch, "seq": seq, "device": device,
               "limit": parse_bytes(limit) if limit is not None else None, "steps": steps}
    path = cache_path("memory-measurements", request | {"release_freed": release_freed,
                                                        "config": architecture_of(exp.model).to_dict()},
                      sources=TRACE_SOURCES)
    kept = store.read_record_or_quarantine(path) if cached else None
    if kept is not None:
        try:
            return Measured(**kept)
        except TypeError:  # written by another version of Measured: measure again
            path.unlink(missing_ok=True)
    measured = _measure_in_fresh_process(request, release_freed, timeout)
    if cached and not measured.killed:
        store.write_record(path, asdict(measured))
    return measured


def _measure_in_fresh_process(request: dict, release_freed: bool, timeout: float) -> Measured:
    environment = os.environ | ({"MALLOC_MMAP_THRESHOLD_": str(64 * 1024)} if release_freed else {})
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "trainer.memory.measure", json.dumps(request)],
                          capture_output=True, text=True, timeout=timeout, env=environment)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode in (-9, 137) and not lines:
        return Measured(**_identity(request), peak_bytes=None, limit_bytes=request["limit"], killed=True,
                        seconds=time.perf_counter() - started,
                        out_of_memory=f"killed by the operating system (signal 9), most likely out of memory: "
                                      f"{done.stderr.strip()[-300:]}")
    if done.returncode != 0 or not lines:
        raise SuiteError(f"measuring {request['model']} / {request['recipe']} failed (exit {done.returncode}):\n"
                         f"{done.stderr.strip()[-2000:]}")
    return Measured(**json.loads(lines[-1]))


def _identity(request: dict) -> dict:
    return {key: request[key] for key in ("model", "recipe", "batch", "seq", "device")}


def _experiment(request: dict) -> Experiment:
    """The Experiment a request describes (rebuilt in the fresh process from its JSON)."""
    memory = dict(request["memory"])
    memory["method"] = method_from_fields(memory["method"])
    return Experiment(model=request["model"], lr=request["lr"], **memory)


def _child(request: dict) -> dict:
    """Runs in the fresh process: build, train, report."""
    import torch

    from trainer.memory.trace import build_trainable, forward_backward, optimizer_step, prepare_training

    exp = _experiment(request)
    config = architecture_of(exp.model)
    device, limit = request["device"], request["limit"]
    started = time.perf_counter()
    # On a CPU the modeling code and the thread pool are part of what training adds: count from before them.
    before = _status_bytes("VmRSS") if device == "cpu" else None
    _load_code_and_threads(config, exp)  # before any cap: a cap must not stop the code loading
    in_use = _cap_and_restart_peak(device, limit)
    before = in_use if before is None else before
    result = _identity(request) | {"limit_bytes": limit, "peak_bytes": None}
    try:
        model = build_trainable(config, exp)
        trainable, optimizer = prepare_training(model, exp, fake=False, foreach=device == "cuda", device=device)
        _restart_peak(device)  # random initialisation briefly holds extra copies; loading weights does not
        ids = torch.randint(0, config.vocab_size, (request["batch"], request["seq"]), device=device)
        for _ in range(request["steps"]):
            forward_backward(model, ids, exp)
            optimizer_step(optimizer, trainable, exp)
        result["trainable_bytes"] = sum(p.numel() * p.element_size() for p in trainable)
        result["optimizer_state_bytes"] = _state_bytes(optimizer)
        result["peak_bytes"] = _peak(device) - before
    except Exception as error:  # noqa: BLE001 - anything that is not running out of memory is re-raised
        if not _is_out_of_memory(error):
            raise
        first_line = next(iter(str(error).splitlines()), "") or "no message (an allocation was refused)"
        result["out_of_memory"] = f"{type(error).__name__}: {first_line[:300]}"
        result["reached_bytes"] = _peak(device) - before
    result["seconds"] = time.perf_counter() - started
    return result


def _load_code_and_threads(config, exp: Experiment) -> None:
    """Import the architecture's code and start the thread pool: under a cap, a thread's stack
    reservation alone would fail (libgomp then exits the process)."""
    import torch
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    import trainer.training.placement  # noqa: F401 - the step imports it; under a cap the import itself can fail

    torch.ones(256, 256) @ torch.ones(256, 256)
    MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]  # imports the architecture's modeling module
    if exp.method.kind == "lora":
        import peft  # noqa: F401


def _cap_and_restart_peak(device: str, limit: int | None) -> int:
    """Apply the cap and start the peak from here; returns the device's bytes in use now."""
    import resource

    import torch

    if device == "cuda":
        torch.cuda.init()
        if limit is not None:
            total = torch.cuda.get_device_properties(0).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, limit / total))
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    _restart_peak(device)  # VmHWM back to the current resident size
    if limit is not None:
        size = _status_bytes("VmSize")
        resource.setrlimit(resource.RLIMIT_AS, (size + limit, resource.RLIM_INFINITY))
    return _status_bytes("VmRSS")


def _restart_peak(device: str) -> None:
    """From here the peak counts what is alive now and what training adds (the baseline stays)."""
    import torch

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    else:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")


def _peak(device: str) -> int:
    import torch

    return torch.cuda.max_memory_allocated() if device == "cuda" else _status_bytes("VmHWM")


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise SuiteError(f"/proc/self/status has no {field} (measuring CPU memory needs Linux)")


def _state_bytes(optimizer) -> int:
    if optimizer is None:
        return 0
    return sum(value.numel() * value.element_size() for state in optimizer.state.values()
               for value in state.values() if hasattr(value, "element_size"))


def _is_out_of_memory(error: BaseException | None) -> bool:
    """The error, or one it was raised from (a failed lazy import wraps a MemoryError)."""
    if error is None:
        return False
    text = str(error).lower()
    return (isinstance(error, MemoryError) or "out of memory" in text or "can't allocate memory" in text
            or "cannot allocate memory" in text or _is_out_of_memory(error.__cause__ or error.__context__))


if __name__ == "__main__":  # importing trainer has set the Hugging Face libraries offline
    print(json.dumps(_child(json.loads(sys.argv[1]))))
