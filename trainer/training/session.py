"""Train one run: load the model, apply the method, probe at evaluated epochs, checkpoint, write the record.

Everything here decides a run's numbers, so this package's source is part of every run key
(trainer.runs.keys). Order of writes: checkpoint, then record, then drop the older checkpoint, so a
record never points at nothing and a kill at any moment loses at most the epoch in flight.

A record may hold more epochs than its checkpoint (the last one was not kept: `resumable=False`, the cache
cap, a damaged file). A longer request then replays: it trains from the checkpoint (or from scratch) through
the recorded epochs without probing them, checkpointing as it goes while the record keeps its answers, and
probes again from the first epoch past them.
"""

from __future__ import annotations

import shutil
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
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
    Stop,
    evaluation_from_json,
    read_or_quarantine,
)
from trainer.errors import CacheCorrupt, ConfigError
from trainer.experiment import Experiment
from trainer.models.quantized import check_quantizable
from trainer.models.sources import resolve_model
from trainer.training.batches import PromptFormat, training_examples
from trainer.training.checkpoint import TrainingState, gather_state, load_checkpoint, save_checkpoint
from trainer.training.diagnostics import LayerWatch, top_layers
from trainer.training.loop import optimizer_for, run_epochs
from trainer.training.methods import decoder_layers, load_base, prepare, trained_layers
from trainer.training.optim import check_trainable
from trainer.training.placement import accelerator_for, describe, precision_for, weights_as_they_are
from trainer.training.probe import neutral_logprobs, probe_model
from trainer.training.sharding import is_sharded, note_if_it_fits_anyway, refuse_unless_trainable, reshard, shard


def train_run(exp: Experiment, folder: Path, record: RunRecord | None, *, key: str, components: dict,
              baseline_path: Path, progress: bool) -> RunRecord | None:
    """Train `exp` into `folder` from `record`'s last checkpoint (or from scratch); returns the final record.

    `exp` is placed (a device kind and a process count). Under several processes every rank runs this;
    the main one writes, the others train their share and wait for it (they return None). A sharded
    model (offload="fsdp2") is probed and gathered by every rank together, since each holds a part of it.
    """
    check_trainable_here(exp)
    accelerator = accelerator_for(exp)
    main, sharded = accelerator.is_main_process, is_sharded(exp)
    probing = main or sharded
    source = resolve_model(exp.model)
    behavior = load_behavior(exp.behavior)
    loaded = load_base(exp, accelerator.device)
    tokenizer = loaded.tokenizer
    fmt = PromptFormat(loaded.prompt_style, behavior.prompt_template)

    def probe(model, base_neutral, baseline_generations, generate=True) -> dict:
        try:
            with weights_as_they_are(model):
                return probe_model(model, tokenizer, fmt, behavior, exp.gen_tokens, base_neutral,
                                   baseline_generations, generate, accelerator.device)
        finally:
            if sharded:
                reshard(model)

    # Epoch 0 is the pretrained model in fp32 on the run's device, before any method or precision is applied
    # (a quantized base is loaded on its device, and its epoch 0 is the quantized model the adapter starts from).
    base = shard(loaded.model, exp.device) if sharded else \
        loaded.model if exp.quantize else loaded.model.to(accelerator.device)
    if sharded and main:
        note_if_it_fits_anyway(exp, sum(p.numel() for p in base.parameters()))  # global counts of the shards
    base_neutral = neutral_logprobs(base, tokenizer, list(behavior.neutral_prompts), accelerator.device) \
        if probing else []
    if sharded:
        reshard(base)
    baseline = _baseline(baseline_path, lambda: probe(base, base_neutral, None), main, sharded) if probing else None
    model = prepare(base, exp)
    watch = LayerWatch(model)  # starting weights, taken before a resume overwrites them
    optimizer = optimizer_for(model, exp)
    start = _resume_point(folder, record, model, optimizer, main)
    answered = _replay_through(record, start, main)  # epochs the record holds already: trained, not probed
    # Placed and wrapped for data parallelism across processes (a sharded model is already both).
    trained = model if sharded else accelerator.prepare_model(model)
    precision = precision_for(accelerator, exp)
    if main and record is None:
        (folder / store.DECISIONS).unlink(missing_ok=True)  # notes about a record that is no longer there
        record = _new_record(exp, key, components, source, behavior, model)
        record.evaluations = [baseline]
    if main:
        record.experiment["epochs"] = exp.epochs
        record.placement = Placement(**describe(accelerator, exp, precision))
    evaluated = set(exp.evaluated_epochs())
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")

    def after_epoch(epoch: int, log: EpochLog) -> None:
        """Checkpoint and probe at once (probes only read the weights); the record, which points at the checkpoint,
        is written when both are done, so a kill at any moment still loses only the epoch in flight. A replayed
        epoch is checkpointed only; the last epoch of a request that is not resumable is probed only."""
        replayed = epoch <= answered
        if replayed and log.stopped is not None:
            raise CacheCorrupt(f"{folder}: replaying epoch {epoch} stopped the run ({log.stopped.reason}), but the "
                               f"record reached epoch {answered} without stopping: this machine does not "
                               f"reproduce the cached run; delete {folder} to train it afresh here")
        if main and not replayed:
            record.train_log.append(log)
        if epoch in evaluated or log.stopped is not None:
            keep = log.stopped is None and (exp.resumable or epoch < exp.epochs)
            state = gather_state(model, optimizer, keep=main) if probing and keep else None
            written = writer.submit(_save, folder, state, epoch) if state is not None else None
            evaluation = _evaluate(epoch) if probing and not replayed else None
            if main:
                _record(folder, record, epoch, evaluation, log.stopped, written)
        accelerator.wait_for_everyone()  # the others wait while the main process probes and writes

    def _evaluate(epoch: int) -> Evaluation:
        started = time.perf_counter()
        baseline_generations = record.evaluations[0].generations if main else None
        result = probe(model, base_neutral, baseline_generations, exp.generate)
        changes = watch.relative_change()
        return Evaluation(epoch=epoch, **result, probe_seconds=round(time.perf_counter() - started, 2),
                          layers=LayerChanges(changes, top_layers(changes)))

    splits = {split: training_examples(behavior, split, exp.seed) for split in {exp.data, exp.data_at(exp.epochs)}}

    def examples_at(epoch: int):
        return splits[exp.data_at(epoch)]

    try:
        run_epochs(trained, tokenizer, fmt, examples_at, exp, optimizer, start, after_epoch, precision, progress,
                   watch=watch, accelerator=accelerator)
    finally:
        writer.shutdown(wait=True)
    return record if main else None


def _record(folder: Path, record: RunRecord, epoch: int, evaluation: Evaluation | None, stopped: Stop | None,
            written: Future | None) -> None:
    """The record after an evaluated epoch: its evaluation (None for a replayed one, already there), then the
    checkpoint it points at, or none when nothing will go on from here."""
    if evaluation is not None:
        record.evaluations.append(evaluation)
        record.epochs_done = epoch
    if stopped is not None:
        record.stopped = stopped  # a stopped run writes no checkpoint (`written` is None)
    if written is None:
        _final_record(folder, record)
    else:
        _record_then_drop_older(folder, written.result(), record)  # result(): the checkpoint is whole, or raises


def check_trainable_here(exp: Experiment) -> None:
    """Recipes the planner reads but this trainer does not run: offload other than "fsdp2", what the sharding
    cannot wrap, 8-bit AdamW (not trained here), and a quantized base where bitsandbytes is missing or cannot run.
    Refused before any model is loaded."""
    check_trainable(exp.optimizer)
    if exp.quantize:
        check_quantizable(exp.quantize, exp.device, exp.processes)
    if exp.offload is not None and not is_sharded(exp):
        raise ConfigError(f"Experiment(model={exp.model!r}, offload={exp.offload!r})", [
            f"offload={exp.offload!r} is planned (trainer.memory.plan) but not trained: train with host offload as "
            "offload='fsdp2' (FSDP2 with CPU offload), or declare offload=None"])
    refuse_unless_trainable(exp)


def _baseline(path: Path, measure, main: bool = True, together: bool = False) -> Evaluation | None:
    """Epoch-0 probes, measured once per baseline key and shared by every run that has that key; a cached
    one that is damaged or of another shape is moved aside and measured again. With `together` (a sharded
    model: each rank holds a part) the main rank decides whether to measure and every rank takes part."""
    if not main:
        if _main_says(False):
            measure()
        return None
    with store.locked(path.with_suffix(".lock")):
        cached = read_or_quarantine(path, lambda data: evaluation_from_json({"epoch": 0, **data}))
        if together:
            _main_says(cached is None)
        if cached is not None:
            return cached
        result = measure()
        store.write_record(path, result)
        return evaluation_from_json({"epoch": 0, **result})


def _main_says(flag: bool) -> bool:
    """The main rank's yes or no, received by every rank (a broadcast of one number)."""
    import torch
    import torch.distributed as dist

    value = torch.tensor([int(flag)])  # a host tensor: the group has gloo beside NCCL (placement)
    dist.broadcast(value, src=0)
    return bool(value.item())


def _resume_point(folder: Path, record: RunRecord | None, model, optimizer, main: bool = True) -> int:
    """The epoch of the record's checkpoint (at or before the record's last epoch), or 0 when there is none that
    loads (every process loads the same checkpoint; the main one says so)."""
    if record is None or not record.checkpoint:
        return 0
    try:
        epoch = load_checkpoint(folder / record.checkpoint, model, optimizer)
    except (CacheCorrupt, FileNotFoundError, ValueError, RuntimeError) as error:
        if main:
            print(f"[finetune] cannot resume from {folder / record.checkpoint} ({error}); starting from epoch 0",
                  file=sys.stderr)
        return 0
    if epoch > record.epochs_done:  # a record never runs behind its checkpoint
        return 0
    if main:
        print(f"[finetune] resuming {record.model.name} from cached epoch {epoch}", file=sys.stderr)
    return epoch


def _replay_through(record: RunRecord | None, start: int, main: bool) -> int:
    """The last epoch the record holds (0 without one): epochs start+1 up to it are trained again to reach
    its weights, and not probed, since their evaluations are recorded."""
    answered = record.epochs_done if record is not None else 0
    if main and answered > start:
        print(f"[finetune] replaying epochs {start + 1}-{answered} of {record.model.name} without probes: the "
              f"record holds them, its checkpoint at epoch {answered} was not kept", file=sys.stderr)
    return answered


def _save(folder: Path, state: TrainingState, epoch: int) -> str:
    """Write checkpoint-<epoch> (whole, or not at all) and return its name."""
    name = f"checkpoint-{epoch}"
    save_checkpoint(folder / name, state, epoch)
    return name


def _record_then_drop_older(folder: Path, name: str, record: RunRecord) -> None:
    """Once checkpoint `name` is whole: the record pointing at it, then older checkpoints go. The record never
    points at nothing."""
    previous = record.checkpoint
    record.checkpoint = name
    store.write_record(folder / store.RECORD, record.to_json())
    if previous and previous != name:
        shutil.rmtree(folder / previous, ignore_errors=True)
    retention.enforce_limit(keep=folder)


def _final_record(folder: Path, record: RunRecord) -> None:
    """A run that stopped for good, or a request nothing will go on from, keeps no checkpoint: record first,
    then drop the older one."""
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
