"""`python -m trainer cache`: every entry with its size and model, and the totals."""

from __future__ import annotations

from pathlib import Path

from trainer import Experiment
from trainer.cache_report import entries, report
from trainer.memory import plan
from trainer.runner import obtain
from trainer.units import format_bytes


def test_a_trained_run_and_a_plan_are_listed_with_their_sizes_and_model():
    run = obtain(Experiment(model="tiny-llama", epochs=1, eval_every=1, lr=1e-3, gen_tokens=4), progress=False)
    plan("tiny-qwen2", "sgd", batch=2, seq=16)
    found = entries()
    runs = [e for e in found if e.kind == "run"]
    assert [r.path.name for r in runs] == [Path(run.path).name]
    assert runs[0].model == "tiny-llama" and runs[0].size > 0 and "checkpoint-1" in runs[0].label
    assert any(e.kind == "memory trace" for e in found)
    text = report(found)
    assert f"total: {format_bytes(sum(e.size for e in found))} in {len(found)} entries" in text
    assert "tiny-llama" in report(found, model="tiny-llama")
    assert "memory trace" not in report(found, model="tiny-llama").split("\n")[1]


def test_an_empty_cache_reports_nothing():
    assert entries() == []
    assert "total: 0 B in 0 entries" in report([])
