"""Get a run's record: from the cache when it covers the request, else train (or resume) and probe.

A warm request loads no model: the key is computed from cheap fingerprints, and the record
alone answers it. One lock per experiment key, so parallel workers train each experiment once.
"""

from __future__ import annotations

from pathlib import Path

from trainer.cache import store
from trainer.cache.keys import content_key
from trainer.cache.record import Run
from trainer.errors import CacheCorrupt
from trainer.experiment import Experiment
from trainer.models.sources import resolve_model
from trainer.runs.keys import baseline_key, experiment_key, key_components
from trainer.training.session import train_run


def obtain(exp: Experiment, progress: bool = True) -> Run:
    """The run record for `exp`, through `exp.epochs`; trains only what the cache lacks."""
    source = resolve_model(exp.model)
    source.check_available()
    components = key_components(exp)
    key = content_key(components)
    folder = store.run_dir(key)
    with store.locked(folder.with_suffix(".lock")):
        store.remove_unfinished(folder)
        body = store.read_record_or_quarantine(folder / store.RECORD)
        if answers(body, exp):
            return Run(body, exp.epochs, from_cache=True, path=str(folder))
        baseline_path = store.cache_root() / "baselines" / f"{baseline_key(components)}.json"
        body = train_run(exp, folder, body, key=key, components=components, baseline_path=baseline_path,
                         progress=progress)
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
