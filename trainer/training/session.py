"""Train one run: load the model, apply the method, probe at evaluated epochs, checkpoint, write the record.

Everything here decides a run's numbers, so this package's source is part of every run key
(trainer.runs.keys). Order of writes: checkpoint, then record, then drop the older checkpoint, so a
record never points at nothing and a kill at any moment loses at most the epoch in flight.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from trainer.behavior import load_behavior
from trainer.cache import retention, store
from trainer.cache.record import (
    BehaviorInfo,
    EpochLog,
    Evaluation,
    LayerChanges,
    MethodInfo,
    ModelInfo,
    Placement,
    RunRecord,
    evaluation_from_json,
    read_or_quarantine,
)
from trainer.errors import CacheCorrupt, ConfigError
from trainer.experiment import Experiment
from trainer.models.sources import resolve_model
from trainer.training.batches import PromptFormat, training_examples
from trainer.training.checkpoint import load_checkpoint, save_checkpoint
from trainer.training.diagnostics import LayerWatch, top_layers
from trainer.training.loop import optimizer_for, run_epochs
from trainer.training.methods import decoder_layers, prepare, trained_layers
from trainer.training.optim import check_trainable
from trainer.training.placement import accelerator_for, describe, precision_for, weights_as_they_are
from trainer.training.probe import neutral_logprobs, probe_model


def train_run(exp: Experiment, folder: Path, record: RunRecord | None, *, key: str, components: dict,
              baseline_path: Path, progress: bool) -> RunRecord | None:
    """Train `exp` into `folder` from `record`'s last checkpoint (or from scratch); returns the final record.

    `exp` is placed (a device kind and a process count). Under several processes every rank runs this;
    the main one probes and writes, the others train their share and wait for it (they return None).
    """
    _check_trainable_here(exp)
    accelerator = accelerator_for(exp)
    main = accelerator.is_main_process
    source = resolve_model(exp.model)
    behavior = load_behavior(exp.behavior)
    loaded = source.load()
    tokenizer = loaded.tokenizer
    fmt = PromptFormat(loaded.prompt_style, behavior.prompt_template)
    # Epoch 0 is the pretrained model in fp32 on the run's device, before any method or precision is applied.
    base = loaded.model.to(accelerator.device)
    base_neutral = neutral_logprobs(base, tokenizer, list(behavior.neutral_prompts)) if main else []
    baseline = _baseline(baseline_path, lambda: probe_model(base, tokenizer, fmt, behavior, exp.gen_tokens,
                                                            base_neutral, None)) if main else None
    model = prepare(base, exp)
    watch = LayerWatch(model)  # starting weights, taken before a resume overwrites them
    optimizer = optimizer_for(model, exp)
    start = _resume_point(folder, record, model, optimizer, main)
    trained = accelerator.prepare_model(model)  # placed, and wrapped for data parallelism across processes
    precision = precision_for(accelerator, exp)
    if main and start == 0:
        (folder / store.DECISIONS).unlink(missing_ok=True)  # notes about a record that is no longer there
        record = _new_record(exp, key, components, source, behavior, model)
        record.evaluations = [baseline]
    if main:
        record.experiment["epochs"] = exp.epochs
        record.placement = Placement(**describe(accelerator, exp, precision))
    evaluated = set(exp.evaluated_epochs())

    def after_epoch(epoch: int, log: EpochLog) -> None:
        if main:
            _evaluate_and_save(epoch, log)
        accelerator.wait_for_everyone()  # the others wait while the main process probes and writes

    def _evaluate_and_save(epoch: int, log: EpochLog) -> None:
        record.train_log.append(log)
        if epoch not in evaluated and log.stopped is None:
            return
        started = time.perf_counter()
        with weights_as_they_are(model):
            result = probe_model(model, tokenizer, fmt, behavior, exp.gen_tokens, base_neutral,
                                 record.evaluations[0].generations, exp.generate)
        changes = watch.relative_change()
        record.evaluations.append(Evaluation(
            epoch=epoch, **result, probe_seconds=round(time.perf_counter() - started, 2),
            layers=LayerChanges(changes, top_layers(changes))))
        record.epochs_done = epoch
        if log.stopped is not None:
            record.stopped = log.stopped
            _final_record(folder, record)
        else:
            _checkpoint_then_record(folder, model, optimizer, epoch, record)

    examples = training_examples(behavior, exp.data, exp.seed)
    run_epochs(trained, tokenizer, fmt, examples, exp, optimizer, start, after_epoch, precision, progress,
               watch=watch, accelerator=accelerator)
    return record if main else None


def _check_trainable_here(exp: Experiment) -> None:
    """Recipes the planner reads but this trainer does not run: offload (accelerate's comes next) and 8-bit
    AdamW (bitsandbytes is not installed). Refused before any model is loaded."""
    check_trainable(exp.optimizer)
    if exp.offload is not None:
        raise ConfigError(f"Experiment(model={exp.model!r}, offload={exp.offload!r})", [
            "CPU offload can be planned (trainer.memory.plan) but not trained yet: training runs every tensor "
            "on one device; declare offload=None to train, or plan() the experiment to see where its bytes go"])


def _baseline(path: Path, measure) -> Evaluation:
    """Epoch-0 probes, measured once per baseline key and shared by every run that has that key; a cached
    one that is damaged or of another shape is moved aside and measured again."""
    with store.locked(path.with_suffix(".lock")):
        cached = read_or_quarantine(path, lambda data: evaluation_from_json({"epoch": 0, **data}))
        if cached is not None:
            return cached
        result = measure()
        store.write_record(path, result)
        return evaluation_from_json({"epoch": 0, **result})


def _resume_point(folder: Path, record: RunRecord | None, model, optimizer, main: bool = True) -> int:
    """The epoch of the last complete checkpoint matching the record, or 0 to start afresh (every process
    loads the same checkpoint; the main one says so)."""
    if record is None or not record.checkpoint:
        return 0
    try:
        epoch = load_checkpoint(folder / record.checkpoint, model, optimizer)
    except (CacheCorrupt, FileNotFoundError, ValueError, RuntimeError) as error:
        if main:
            print(f"[finetune] cannot resume from {folder / record.checkpoint} ({error}); starting from epoch 0",
                  file=sys.stderr)
        return 0
    if epoch != record.epochs_done:
        return 0
    if main:
        print(f"[finetune] resuming {record.model.name} from cached epoch {epoch}", file=sys.stderr)
    return epoch


def _checkpoint_then_record(folder: Path, model, optimizer, epoch: int, record: RunRecord) -> None:
    """Checkpoint first, record second, then drop older checkpoints: the record never points at nothing."""
    name = f"checkpoint-{epoch}"
    save_checkpoint(folder / name, model, optimizer, epoch)
    previous = record.checkpoint
    record.checkpoint = name
    store.write_record(folder / store.RECORD, record.to_json())
    if previous and previous != name:
        shutil.rmtree(folder / previous, ignore_errors=True)
    retention.enforce_limit(keep=folder)


def _final_record(folder: Path, record: RunRecord) -> None:
    """A run that stopped for good needs no resumable checkpoint: record first, then drop it."""
    previous = record.checkpoint
    record.checkpoint = None
    store.write_record(folder / store.RECORD, record.to_json())
    if previous:
        shutil.rmtree(folder / previous, ignore_errors=True)


def _new_record(exp: Experiment, key: str, components: dict, source, behavior, model) -> RunRecord:
    params = sum(p.numel() for name, p in model.named_parameters() if "lora_" not in name)  # the model's own
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return RunRecord(
        key=key, key_components=components, experiment=exp.key_fields(),
        model=ModelInfo(exp.model, params, source.published_params, components["model_fingerprint"],
                        source.prompt_style),
        behavior=BehaviorInfo(behavior.name, behavior.version, behavior.sha256),
        method=MethodInfo(trained, trained_layers(model), len(decoder_layers(model))),
        probes=list(behavior.probes))
