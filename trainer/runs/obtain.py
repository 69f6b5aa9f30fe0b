"""Get a run's record: from the cache when it covers the request, else train (or resume) and probe.

A warm request loads no model: the key is computed from cheap fingerprints, and the record
alone answers it. One lock per experiment key, so parallel workers train each experiment once.
"""

from __future__ import annotations

from pathlib import Path

from trainer.cache import store
from trainer.cache.keys import content_key
from trainer.cache.record import Run, RunRecord, read_or_quarantine
from trainer.errors import CacheCorrupt
from trainer.experiment import Experiment
from trainer.models.sources import resolve_model
from trainer.runs.keys import baseline_key, experiment_key, key_components
from trainer.runs.ranks import train_in_ranks
from trainer.training.placement import placed
from trainer.training.session import check_trainable_here, train_run
from trainer.training.sharding import is_sharded


def obtain(exp: Experiment, progress: bool = True) -> Run:
    """The run record for `exp`, through `exp.epochs`; trains only what the cache lacks (on the device and in
    the processes `exp` asks for, or the settings choose)."""
    exp = placed(exp)
    source = resolve_model(exp.model)
    source.check_available()
    components = key_components(exp)
    key = content_key(components)
    folder = store.run_dir(key)
    with store.locked(folder.with_suffix(".lock")):
        store.remove_unfinished(folder)
        record = read_run_record(folder)
        if record is not None and record.answers(exp.epochs):
            return Run(record, exp.epochs, from_cache=True, path=str(folder))
        baseline_path = store.cache_root() / "baselines" / f"{baseline_key(components)}.json"
        check_trainable_here(exp)  # before any model loads or process starts
        if exp.processes > 1 or is_sharded(exp):  # a sharded model needs a process group, even of one
            train_in_ranks(exp, folder, key=key, components=components, baseline_path=baseline_path,
                           progress=progress)
            record = read_run_record(folder)
        else:
            record = train_run(exp, folder, record, key=key, components=components, baseline_path=baseline_path,
                               progress=progress)
    return Run(record, exp.epochs, from_cache=False, path=str(folder))


def read_run_record(folder: Path) -> RunRecord | None:
    """The typed record in `folder`; a damaged one, or one of another schema, is moved aside (None: retrain)."""
    return read_or_quarantine(folder / store.RECORD, RunRecord.from_json)


def is_cached(exp: Experiment) -> bool:
    """Whether the cache already answers `exp` (a cheap look at its record; no model is loaded)."""
    try:
        body = store.read_record(store.run_dir(experiment_key(exp)) / store.RECORD)
        return body is not None and RunRecord.from_json(body).answers(exp.epochs)
    except CacheCorrupt:  # damaged or of another schema: not an answer
        return False


def obtain_with_control(exp: Experiment, progress: bool = True) -> Run:
    """The run plus its null control (same run on placebo data) attached as `run.control`."""
    run = obtain(exp, progress)
    if exp.data != "control":
        run.control = obtain(exp.control(), progress)
    return run


def record_decision(run: Run, entry: dict) -> None:
    """Note beside a run's record how a question about it was decided (e.g. 'stopped early at epoch 2 of
    10'). The record itself is what was measured, so it is never rewritten for a note."""
    folder = Path(run.path)
    with store.locked(folder.with_suffix(".lock")):
        kept = [d for d in (store.read_record_or_quarantine(folder / store.DECISIONS) or {}).get("decisions", [])
                if d["question"] != entry["question"]]
        store.write_record(folder / store.DECISIONS, {"decisions": kept + [entry]})


def decisions(run: Run) -> list[dict]:
    """The notes `record_decision` left beside a run's record."""
    return (store.read_record_or_quarantine(Path(run.path) / store.DECISIONS) or {}).get("decisions", [])
