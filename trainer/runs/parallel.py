"""Train several runs at once: worker processes, each with its share of the cores.

A run is not all matrix work: checkpoint hashing and writing, model loading and Python between
steps use one core. On 2 cores two Gemma-3 null runs (3 epochs each) took 159 s one after the
other in one process with 2 threads, and 113 s side by side in two processes with 1 thread each
(1.4x): the second process computes while the first writes. Seeds and their controls at one look
are independent, so `obtain_all` trains the uncached ones side by side; cached ones are read here.

`FT_PARALLEL_RUNS` (the plugin's --ft-parallel-runs) sets the number of processes; by default as
many as there are cores, at most 2, and never more than fit in available memory. With a Ray address
(--ft-ray-address, $RAY_ADDRESS) the runs go to that cluster instead (trainer.runs.cluster).
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from trainer import settings
from trainer.cache.record import Run
from trainer.errors import SuiteError
from trainer.experiment import Experiment
from trainer.models.sources import resolve_model
from trainer.runs.obtain import is_cached, obtain
from trainer.training.loop import use_progress_row
from trainer.training.placement import placed

BYTES_PER_PARAMETER = 20  # fp32 weights, gradients, two AdamW moments, and room for activations
_pool: tuple[int, ProcessPoolExecutor] | None = None


def obtain_all(experiments: list[Experiment], progress: bool = True) -> list[Run]:
    """Each experiment's run, in order; those the cache lacks are trained side by side."""
    for exp in experiments:
        resolve_model(exp.model).check_available()  # a missing model is reported here, before any worker or task
    if settings.active().cluster_address():
        from trainer.runs import cluster  # Ray is imported only when a cluster is asked for

        return cluster.obtain_all(experiments, progress)
    missing = [exp for exp in experiments if not is_cached(exp)]
    workers = min(settings.active().workers(), len(missing), _fit_in_memory(missing), _runs_sharing_devices(missing))
    if workers <= 1:
        return [obtain(exp, progress) for exp in experiments]
    trained = dict(zip(missing, _in_workers(missing, workers, progress)))
    return [trained[exp] if exp in trained else obtain(exp, progress) for exp in experiments]


def _runs_sharing_devices(experiments: list[Experiment]) -> int:
    """Runs side by side split the cores between them; a run that already uses several processes, or a GPU
    (one each, whole), takes the machine alone."""
    placed_runs = [placed(exp) for exp in experiments]
    return 1 if any(exp.processes > 1 or exp.device != "cpu" for exp in placed_runs) else len(experiments)


def _in_workers(experiments: list[Experiment], workers: int, progress: bool) -> list[Run]:
    pool = _pool_of(workers)
    resolved = settings.active().resolved()  # what this process would use, handed over explicitly
    futures = [pool.submit(_obtain_in_worker, exp, progress, resolved) for exp in experiments]
    try:
        return [future.result() for future in futures]
    except BrokenProcessPool as error:
        shutdown()
        raise SuiteError(f"a training process died while training {len(experiments)} runs side by side "
                         f"({workers} processes), most likely out of memory; finished runs are cached. Run again "
                         f"with {settings.PARALLEL_RUNS_ENV}=1 (--ft-parallel-runs 1) to train one at a "
                         "time") from error
    finally:
        for future in futures:
            future.cancel()


def _fit_in_memory(experiments: list[Experiment]) -> int:
    """How many of these runs fit in available memory at once (1 when a model's size is unknown)."""
    sizes = [resolve_model(exp.model).parameters_at_most() for exp in experiments]
    if not sizes or None in sizes:
        return 1
    need = max(sizes) * BYTES_PER_PARAMETER + (1 << 30)
    return max(1, int(_available_bytes() // need))


def _available_bytes() -> int:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def _pool_of(workers: int) -> ProcessPoolExecutor:
    """One pool per process, kept between looks (starting a worker imports torch: seconds)."""
    global _pool
    if _pool is not None and _pool[0] != workers:
        shutdown()
    if _pool is None:
        threads = max(1, settings.cores() // workers)
        rows = multiprocessing.get_context("spawn").Queue()
        for row in range(workers):
            rows.put(row)
        executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_start_worker, initargs=(threads, rows))
        _pool = (workers, executor)
    return _pool[1]


def _obtain_in_worker(exp: Experiment, progress: bool, given: settings.Settings) -> Run:
    """`obtain` under the caller's settings of this moment (a worker outlives the settings it started with)."""
    settings.use(given)
    return obtain(exp, progress)


def _start_worker(threads: int, rows) -> None:
    import torch

    torch.set_num_threads(threads)
    use_progress_row(rows.get())


def shutdown() -> None:
    global _pool
    if _pool is not None:
        _pool[1].shutdown(wait=True, cancel_futures=True)
        _pool = None


atexit.register(shutdown)
