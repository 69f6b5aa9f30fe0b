"""Runs trained side by side in worker processes give what one process gives, and fail clearly."""

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import pytest

from trainer import Experiment, settings
from trainer.errors import SuiteError
from trainer.runs import parallel
from trainer.runs.obtain import obtain
from trainer.training.placement import placed


@pytest.fixture
def side_by_side(monkeypatch):
    monkeypatch.setenv(settings.PARALLEL_RUNS_ENV, "2")
    yield
    parallel.shutdown()


def tiny_runs() -> list[Experiment]:
    return [Experiment(model="tiny-llama", epochs=2, eval_every=1, lr=1e-3, seed=seed, generate=False)
            for seed in (0, 1)] + [Experiment(model="tiny-qwen2", epochs=2, eval_every=1, lr=1e-3, generate=False)]


def test_side_by_side_runs_match_runs_in_this_process(side_by_side, tmp_path, monkeypatch):
    runs = parallel.obtain_all(tiny_runs(), progress=False)
    assert parallel._pool is not None, "uncached runs should have gone to worker processes"
    assert [r.from_cache for r in runs] == [False, False, False]
    monkeypatch.setenv("FT_CACHE_DIR", str(tmp_path / "serial-cache"))
    monkeypatch.setenv(settings.PARALLEL_RUNS_ENV, "1")
    serial = [obtain(exp, progress=False) for exp in tiny_runs()]
    for got, expected in zip(runs, serial):
        assert got.experiment == expected.experiment
        for epoch in (1, 2):  # one thread per worker vs two here: equal up to float summation order
            assert got.evaluation(epoch).margins == pytest.approx(expected.evaluation(epoch).margins, abs=1e-5)


def test_cached_runs_are_read_here_without_starting_workers(side_by_side):
    parallel.obtain_all(tiny_runs(), progress=False)
    parallel.shutdown()
    again = parallel.obtain_all(tiny_runs(), progress=False)
    assert parallel._pool is None
    assert all(r.from_cache for r in again)


def test_workers_follow_the_callers_current_cache(side_by_side, tmp_path, monkeypatch):
    parallel.obtain_all(tiny_runs()[:2], progress=False)
    other = tmp_path / "second-cache"
    monkeypatch.setenv("FT_CACHE_DIR", str(other))
    parallel.obtain_all(tiny_runs()[:2], progress=False)  # same pool, new cache: trained again there
    assert len(list((other / "runs").glob("*/record.json"))) == 2


def test_workers_receive_the_active_settings_object(side_by_side, tmp_path):
    """Settings made active in this process (as the plugin does from --ft-* options) reach the workers
    with each task; nothing is passed through the environment."""

    chosen = tmp_path / "settings-cache"
    previous = settings.use(settings.active().replace(cache_dir=str(chosen)))
    try:
        parallel.obtain_all(tiny_runs()[:2], progress=False)
    finally:
        settings.use(previous)
    assert "FT_CACHE_DIR" not in os.environ or os.environ["FT_CACHE_DIR"] != str(chosen)
    assert len(list((chosen / "runs").glob("*/record.json"))) == 2


def test_a_dead_worker_is_a_clear_error(side_by_side):
    crashing = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"), initializer=os._exit,
                                   initargs=(1,))
    parallel._pool = ((2, []), crashing)
    with pytest.raises(SuiteError, match="FT_PARALLEL_RUNS=1"):
        parallel.obtain_all(tiny_runs(), progress=False)
    assert parallel._pool is None


def test_no_more_runs_side_by_side_than_fit_in_memory(monkeypatch):
    monkeypatch.setattr(parallel, "_available_bytes", lambda: 24 << 30)
    assert parallel._fit_in_memory([placed(Experiment(model="gemma3-270m"))]) == 4  # 6.4 GB each
    assert parallel._fit_in_memory([placed(Experiment(model="phi-2"))]) == 1


@pytest.mark.parametrize("value", ["0", "two"])
def test_a_bad_worker_count_names_the_setting(monkeypatch, value):
    monkeypatch.setenv(settings.PARALLEL_RUNS_ENV, value)
    with pytest.raises(ValueError, match=f"FT_PARALLEL_RUNS='{value}'"):
        settings.active().workers()


def test_runs_on_cuda_get_a_gpu_each_and_as_many_run_at_once_as_there_are_gpus(monkeypatch):
    """On a machine with 4 GPUs (CUDA_VISIBLE_DEVICES=2,3,5,7), four single-process CUDA runs train side by side,
    worker i seeing only GPU i of that list; several-process runs still take the machine alone."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3,5,7")
    monkeypatch.setattr(parallel, "device_slots", lambda kind: 4 if kind == "cuda" else 2)
    monkeypatch.delenv(settings.PARALLEL_RUNS_ENV)
    runs = [Experiment(model="tiny-llama", device="cuda", processes=1, seed=seed) for seed in range(6)]
    gpus = parallel._gpus_for(runs)
    assert gpus == ["2", "3", "5", "7"]
    assert parallel._runs_sharing_devices(runs, gpus) == 4
    assert settings.active().workers(default=len(gpus)) == 4, "one worker per GPU unless told otherwise"
    assert parallel._runs_sharing_devices([Experiment(model="tiny-llama", device="cuda", processes=2)], gpus) == 1
    assert parallel._gpus_for([Experiment(model="tiny-llama", device="cpu", processes=1)]) == []


def test_a_worker_sees_only_its_own_gpu(monkeypatch):
    import queue

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    rows = queue.Queue()
    rows.put(1)
    threads = __import__("torch").get_num_threads()
    try:
        parallel._start_worker(threads, rows, ["2", "3"])
    finally:
        parallel.use_progress_row(0)
    assert os.environ.pop("CUDA_VISIBLE_DEVICES") == "3"
