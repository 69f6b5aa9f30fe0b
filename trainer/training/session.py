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
from trainer.errors import CacheCorrupt
from trainer.experiment import Experiment
from trainer.models.sources import resolve_model
from trainer.training.batches import PromptFormat, training_examples
from trainer.training.checkpoint import load_checkpoint, save_checkpoint
from trainer.training.diagnostics import LayerWatch, top_layers
from trainer.training.loop import make_optimizer, run_epochs
from trainer.training.methods import apply_method, decoder_layers, trained_layers
from trainer.training.probe import neutral_logprobs, probe_model


def train_run(exp: Experiment, folder: Path, body: dict | None, *, key: str, components: dict, baseline_path: Path,
              progress: bool) -> dict:
    """Train `exp` into `folder` from `body`'s last checkpoint (or from scratch); returns the final record."""
    source = resolve_model(exp.model)
    behavior = load_behavior(exp.behavior)
    loaded = source.load()
    tokenizer = loaded.tokenizer
    fmt = PromptFormat(loaded.prompt_style, behavior.prompt_template)
    # Epoch 0 is the pretrained model in fp32, before any method or precision is applied.
    base_neutral = neutral_logprobs(loaded.model, tokenizer, list(behavior.neutral_prompts))
    baseline = _baseline(baseline_path, lambda: probe_model(loaded.model, tokenizer, fmt, behavior, exp.gen_tokens,
                                                          base_neutral, None))
    model = apply_method(loaded.model.half() if exp.precision == "fp16" else loaded.model, exp)
    watch = LayerWatch(model)  # starting weights, taken before a resume overwrites them
    optimizer = make_optimizer(model, exp)
    start = _resume_point(folder, body, model, optimizer)
    if start == 0:
        body = _new_body(exp, key, components, source, behavior, model)
        body["evaluations"] = [{"epoch": 0, **baseline}]
    body["experiment"]["epochs"] = exp.epochs
    evaluated = set(exp.evaluated_epochs())

    def after_epoch(epoch: int, log: dict) -> None:
        body["train_log"].append(log)
        if epoch not in evaluated and "stopped" not in log:
            return
        started = time.perf_counter()
        result = probe_model(model, tokenizer, fmt, behavior, exp.gen_tokens, base_neutral,
                             body["evaluations"][0]["generations"], exp.generate)
        result["probe_seconds"] = round(time.perf_counter() - started, 2)
        changes = watch.relative_change()
        result["layers"] = {"relative_change": changes, "top": top_layers(changes)}
        body["evaluations"].append({"epoch": epoch, **result})
        body["epochs_done"] = epoch
        if "stopped" in log:
            body["stopped"] = {"epoch": epoch, **log["stopped"]}
            _final_record(folder, body)
        else:
            _checkpoint_then_record(folder, model, optimizer, epoch, body)

    examples = training_examples(behavior, exp.data, exp.seed)
    run_epochs(model, tokenizer, fmt, examples, exp, optimizer, start, after_epoch, progress, watch=watch)
    return body


def _baseline(path: Path, measure) -> dict:
    """Epoch-0 probes, measured once per baseline key and shared by every run that has that key."""
    with store.locked(path.with_suffix(".lock")):
        cached = store.read_record_or_quarantine(path)
        if cached is not None:
            return cached
        result = measure()
        store.write_record(path, result)
        return result


def _resume_point(folder: Path, body: dict | None, model, optimizer) -> int:
    """The epoch of the last complete checkpoint matching the record, or 0 to start afresh."""
    if body is None or not body.get("checkpoint"):
        return 0
    try:
        epoch = load_checkpoint(folder / body["checkpoint"], model, optimizer)
    except (CacheCorrupt, FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"[finetune] cannot resume from {folder / body['checkpoint']} ({error}); starting from epoch 0",
              file=sys.stderr)
        return 0
    if epoch != body["epochs_done"]:
        return 0
    print(f"[finetune] resuming {body['experiment']['model']} from cached epoch {epoch}", file=sys.stderr)
    return epoch


def _checkpoint_then_record(folder: Path, model, optimizer, epoch: int, body: dict) -> None:
    """Checkpoint first, record second, then drop older checkpoints: the record never points at nothing."""
    name = f"checkpoint-{epoch}"
    save_checkpoint(folder / name, model, optimizer, epoch)
    previous = body.get("checkpoint")
    body["checkpoint"] = name
    store.write_record(folder / store.RECORD, body)
    if previous and previous != name:
        shutil.rmtree(folder / previous, ignore_errors=True)
    retention.enforce_limit(keep=folder)


def _final_record(folder: Path, body: dict) -> None:
    """A run that stopped for good needs no resumable checkpoint: record first, then drop it."""
    previous = body.get("checkpoint")
    body["checkpoint"] = None
    store.write_record(folder / store.RECORD, body)
    if previous:
        shutil.rmtree(folder / previous, ignore_errors=True)


def _new_body(exp: Experiment, key: str, components: dict, source, behavior, model) -> dict:
    params = sum(p.numel() for name, p in model.named_parameters() if "lora_" not in name)  # the model's own
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "key": key, "key_components": components, "experiment": exp.key_fields(),
        "model": {"name": exp.model, "parameters": params, "published_parameters": source.published_params,
                  "fingerprint": components["model_fingerprint"], "prompt_style": source.prompt_style},
        "behavior": {"name": behavior.name, "version": behavior.version, "sha256": behavior.sha256},
        "method": {"trainable_parameters": trained, "trained_layers": trained_layers(model),
                   "decoder_layers": len(decoder_layers(model))},
        "probes": list(behavior.probes),
        "epochs_done": 0, "checkpoint": None, "train_log": [], "evaluations": [],
    }


