"""`python -m trainer cache`: every entry with its size and model, and the totals."""

from __future__ import annotations

from pathlib import Path

from tiny import tiny

from trainer import Experiment
from trainer.cache.admin import entries, listing
from trainer.memory.planner import plan
from trainer.runs.obtain import obtain
from trainer.units import format_bytes


def test_a_trained_run_and_a_plan_are_listed_with_their_sizes_and_model():
    run = obtain(tiny(epochs=1), progress=False)
    plan("tiny-qwen2", "sgd", batch=2, seq=16)
    found = entries()
    runs = [e for e in found if e.kind == "run"]
    assert [r.path.name for r in runs] == [Path(run.path).name]
    assert runs[0].model == "tiny-llama" and runs[0].size > 0 and "checkpoint-1" in runs[0].label
    assert any(e.kind == "memory trace" for e in found)
    text = listing(found)
    assert f"total: {format_bytes(sum(e.size for e in found))} in {len(found)} entries" in text
    assert "tiny-llama" in listing(found, model="tiny-llama")
    assert "memory trace" not in listing(found, model="tiny-llama").split("\n")[1]


def test_an_empty_cache_reports_nothing():
    assert entries() == []
    assert "total: 0 B in 0 entries" in listing([])


def test_removing_a_model_s_runs_frees_them_and_a_later_request_trains_again():
    from filelock import FileLock

    from trainer.cache.admin import remove, select

    experiment = tiny(epochs=1)
    first = obtain(experiment, progress=False)
    other = obtain(Experiment(model="tiny-qwen2", epochs=1, eval_every=1, lr=1e-3, gen_tokens=4), progress=False)
    held = Path(other.path)
    with FileLock(str(held.with_name(held.name + ".lock"))):  # another process is using tiny-qwen2's run
        removed, busy = remove(select(entries(), model=None, older_than=0))
    assert [e.path for e in busy] == [held] and held.is_dir()
    assert not Path(first.path).exists() and Path(first.path) in [e.path for e in removed]
    again = obtain(experiment, progress=False)
    assert again.train_log[-1].loss == first.train_log[-1].loss  # retrained, same numbers
    assert again.evaluation(1).margins == first.evaluation(1).margins


def test_removal_needs_a_criterion_and_ages_must_parse():
    import pytest

    from trainer.cache.admin import parse_age, select
    from trainer.errors import ConfigError

    assert parse_age("7d") == 7 * 86400 and parse_age("30min") == 1800
    for bad in ("seven days", "7", "-1d"):
        with pytest.raises(ConfigError, match="7d"):
            parse_age(bad)
    with pytest.raises(ConfigError, match="--model NAME and/or --older-than AGE"):
        select([], model=None, older_than=None)


def test_a_converted_model_in_use_is_not_old_whatever_its_age(monkeypatch):
    """Ages count from the last use: a converted model that runs load is kept by --older-than."""
    import os

    from trainer.cache import admin, store
    from trainer.models.sources import WheelGGUF

    source = WheelGGUF("wheel-model", package="p", module="m")
    monkeypatch.setattr(WheelGGUF, "fingerprint", lambda self: "f" * 64)
    monkeypatch.setattr(WheelGGUF, "_convert", lambda self, folder: store.write_manifest(
        folder.mkdir(parents=True) or folder, {"fingerprint": "f" * 64}))
    folder = source.converted_folder()
    os.utime(folder, (1, 1))  # converted long ago
    assert admin.select(admin.entries(), None, 3600) != [], "an old, unused conversion is old"
    source.converted_folder()  # a run loads it
    assert admin.select(admin.entries(), None, 3600) == []
