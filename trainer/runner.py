"""Get a run's record: from the cache when it covers the request, else train (or resume) and probe.

A warm request loads no model: the key is computed from cheap fingerprints, and the record
alone answers it. One lock per experiment key, so parallel workers train each experiment once.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import shutil
import sys
import time
from pathlib import Path

from trainer import retention, store
from trainer.checkpoint import load_checkpoint, save_checkpoint
from trainer.data import PromptFormat, load_behavior, training_examples
from trainer.diagnostics import LayerWatch, top_layers
from trainer.errors import CacheCorrupt
from trainer.experiment import Experiment
from trainer.loop import make_optimizer, run_epochs
from trainer.methods import apply_method, decoder_layers, trained_layers
from trainer.models import resolve_model
from trainer.probe import neutral_logprobs, probe_model
from trainer.record import Run

# Modules whose code changes what a run measures; their source is part of every cache key.
# (Experiment fields enter the key as values, so editing experiment.py's messages keeps caches.)
OUTCOME_MODULES = ("data.py", "loop.py", "probe.py", "checkpoint.py", "methods.py", "diagnostics.py")


def _source_digest() -> str:
    here = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for name in OUTCOME_MODULES:
        digest.update((here / name).read_bytes())
    return digest.hexdigest()[:16]


# Read once, at import: the key follows the code this process runs, even if files change under it.
CODE_VERSION = _source_digest()


def code_version() -> str:
    return CODE_VERSION


def key_components(exp: Experiment) -> dict:
    """Everything that changes the outcome, and nothing else (the key logs its parts)."""
    source = resolve_model(exp.model)
    behavior = load_behavior(exp.behavior)
    return {
        "experiment": exp.key_fields(),
        "model_fingerprint": source.fingerprint(),
        "prompt_style": source.prompt_style,
        "behavior_sha256": behavior.sha256,
        "code_version": code_version(),
        "torch": importlib.metadata.version("torch"),
        "transformers": importlib.metadata.version("transformers"),
    }


def experiment_key(exp: Experiment) -> str:
    return _hash(key_components(exp))


def obtain(exp: Experiment, progress: bool = True) -> Run:
    """The run record for `exp`, through `exp.epochs`; trains only what the cache lacks."""
    source = resolve_model(exp.model)
    source.check_available()
    components = key_components(exp)
    key = _hash(components)
    folder = store.run_dir(key)
    with store.locked(folder.with_suffix(".lock")):
        store.remove_unfinished(folder)
        body = store.read_record_or_quarantine(folder / store.RECORD)
        if answers(body, exp):
            return Run(body, exp.epochs, from_cache=True, path=str(folder))
        body = _train(exp, key, components, folder, body, progress)
    return Run(body, exp.epochs, from_cache=False, path=str(folder))


def is_cached(exp: Experiment) -> bool:
    """Whether the cache already answers `exp` (a cheap look at its record; no model is loaded)."""
    try:
        body = store.read_record(store.run_dir(experiment_key(exp)) / store.RECORD)
    except CacheCorrupt:
        return False
    return answers(body, exp)


def answers(body: dict | None, exp: Experiment) -> bool:
    """A record answers a request when it reached the epochs asked for, or stopped for good before."""
    return body is not None and (body["epochs_done"] >= exp.epochs or bool(body.get("stopped")))


def obtain_with_control(exp: Experiment, progress: bool = True) -> Run:
    """The run plus its null control (same run on placebo data) attached as `run.control`."""
    run = obtain(exp, progress)
    if exp.data != "control":
        run.control = obtain(exp.control(), progress)
    return run


def record_decision(run: Run, entry: dict) -> None:
    """Note on a run's record how a question about it was decided (e.g. 'stopped early at epoch 2 of 10')."""
    folder = Path(run.path)
    with store.locked(folder.with_suffix(".lock")):
        body = store.read_record_or_quarantine(folder / store.RECORD)
        if body is None:
            return
        kept = [d for d in body.get("decisions", []) if d["question"] != entry["question"]]
        body["decisions"] = kept + [entry]
        store.write_record(folder / store.RECORD, body)


def _train(exp: Experiment, key: str, components: dict, folder: Path, body: dict | None, progress: bool) -> dict:
    source = resolve_model(exp.model)
    behavior = load_behavior(exp.behavior)
    loaded = source.load()
    tokenizer = loaded.tokenizer
    fmt = PromptFormat(loaded.prompt_style, behavior.prompt_template)
    # Epoch 0 is the pretrained model in fp32, before any method or precision is applied.
    base_neutral = neutral_logprobs(loaded.model, tokenizer, list(behavior.neutral_prompts))
    baseline = _baseline(components, lambda: probe_model(loaded.model, tokenizer, fmt, behavior, exp.gen_tokens,
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


def _baseline(components: dict, measure) -> dict:
    """Epoch-0 probes depend on the model, behavior and probe settings only, so a run and its
    null control (and any lr or seed) share one cached baseline."""
    shared = ("model_fingerprint", "prompt_style", "behavior_sha256", "code_version", "torch", "transformers")
    parts = {k: components[k] for k in shared} | {"gen_tokens": components["experiment"]["gen_tokens"]}
    path = store.cache_root() / "baselines" / f"{_hash(parts)}.json"
    with store.locked(path.with_suffix(".lock")):
        cached = store.read_record_or_quarantine(path)
        if cached is not None:
            return cached
        result = measure()
        store.write_record(path, result)
        return result


def _hash(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


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
