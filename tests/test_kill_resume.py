"""Kill -9 at eleven named points of a training run (mid-step, mid-probe, mid-checkpoint write, mid-record
write, ...) and at three random moments: what is on disk is never read as more than it is, and the next
run resumes from the last complete checkpoint to the parameters and answers of an uninterrupted run."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from kill_points import EXPERIMENT, POINTS, RANDOM_KILLS  # tests/ is on sys.path (pytest's prepend import mode)
from safetensors.torch import load_file

from trainer.cache import store
from trainer.runs.keys import experiment_key
from trainer.runs.obtain import is_cached, obtain

HERE = Path(__file__).resolve().parent

KILLS = len(POINTS) + RANDOM_KILLS


@pytest.fixture(scope="module")
def killed(tmp_path_factory) -> dict:
    """Every kill point's outcome, from one process that forks a child per point."""
    root = tmp_path_factory.mktemp("kills")
    seed = random.SystemRandom().randrange(2**31)
    env = os.environ | {"PYTHONPATH": str(HERE.parent), "OMP_NUM_THREADS": "1", "FT_PARALLEL_RUNS": "1"}
    done = subprocess.run([sys.executable, str(HERE / "kill_points.py"), str(root), str(seed)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["point"] for line in lines[:2]] == ["straight", "timing"], done.stdout
    return {"straight": root / "straight", **dict(enumerate(lines[2:]))}


@contextlib.contextmanager
def one_thread():
    """The killed children ran on one thread; resuming on one thread keeps float sums in the same order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def final_state(cache: Path) -> tuple[dict, dict]:
    folder = cache / "runs" / experiment_key(EXPERIMENT)
    body = store.read_record(folder / store.RECORD)
    return body, load_file(str(folder / body["checkpoint"] / "model.safetensors"))


def test_every_kill_point_was_reached_and_killed(killed):
    points = [killed[index] for index in range(KILLS)]
    assert [p["point"] for p in points[: len(POINTS)]] == list(POINTS)
    missed = [p["point"] for p in points if p.get("signal") != signal.SIGKILL]
    assert not missed, f"these children were not killed by signal 9 (a hook never fired?): {missed}"


@pytest.mark.parametrize("index", range(KILLS))
def test_a_killed_run_resumes_to_an_uninterrupted_runs_parameters(killed, index, monkeypatch, capsys):
    point = killed[index]
    cache = Path(point["cache"])
    folder = cache / "runs" / experiment_key(EXPERIMENT)
    monkeypatch.setenv("FT_CACHE_DIR", str(cache))
    body = store.read_record(folder / store.RECORD)  # a record on disk is whole: it never fails its checksum
    start = body["epochs_done"] if body else 0
    if body is not None:
        if body["epochs_done"] < EXPERIMENT.epochs:
            assert not is_cached(EXPERIMENT), f"{point['point']}: a partial run answered the full request"
        manifest = store.read_manifest(folder / body["checkpoint"], verify=True)
        assert manifest["epoch"] == body["epochs_done"], "the record points at a checkpoint of another epoch"
    with one_thread():
        resumed = obtain(EXPERIMENT, progress=False)
    err = capsys.readouterr().err
    if 0 < start < EXPERIMENT.epochs:
        assert f"resuming tiny-llama from cached epoch {start}" in err, f"{point['point']}: did not resume ({err})"
    else:
        assert "resuming" not in err
    assert not list(folder.glob(".*.tmp")), "an interrupted write's temporary files were left behind"
    expected, expected_weights = final_state(killed["straight"])
    got, got_weights = final_state(cache)
    assert resumed.record.epochs_done == EXPERIMENT.epochs
    assert [e["epoch"] for e in got["train_log"]] == [1, 2, 3]
    assert [e["loss"] for e in got["train_log"]] == [e["loss"] for e in expected["train_log"]]
    assert got_weights.keys() == expected_weights.keys()
    differing = [k for k in got_weights if not torch.equal(got_weights[k], expected_weights[k])]
    assert not differing, f"{point['point']}: resumed parameters differ from an uninterrupted run: {differing}"
    for mine, theirs in zip(got["evaluations"], expected["evaluations"], strict=True):
        assert (mine["epoch"], mine["margins"], mine["generations"]) == (
            theirs["epoch"], theirs["margins"], theirs["generations"])
