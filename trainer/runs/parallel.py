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
from trainer.training.placement import device_slots, placed

BYTES_PER_PARAMETER = 20  # fp32 weights, gradients, two AdamW moments, and room for activations
_pool: tuple[tuple[int, list[str]], ProcessPoolExecutor] | None = None


def obtain_all(experiments: list[Experiment], progress: bool = True) -> list[Run]:
    """Each experiment's run, in order; those the cache lacks are trained side by side."""
    for exp in experiments:
        resolve_model(exp.model).check_available()  # a missing model is reported here, before any worker or task
    if settings.active().cluster_address():
        from trainer.runs import cluster  # Ray is imported only when a cluster is asked for

        return cluster.obtain_all(experiments, progress)
    missing = [exp for exp in experiments if not is_cached(exp)]
    where = [placed(exp) for exp in missing]  # device kind and process count, decided once
    gpus = _gpus_for(where)
    workers = min(settings.active().workers(default=len(gpus) or None), len(missing), _fit_in_memory(where),
                  _runs_sharing_devices(where, gpus))
    if workers <= 1:
        return [obtain(exp, progress) for exp in experiments]
    trained = dict(zip(missing, _in_workers(missing, workers, gpus, progress)))
    return [trained[exp] if exp in trained else obtain(exp, progress) for exp in experiments]


def _runs_sharing_devices(experiments: list[Experiment], gpus: list[str]) -> int:
    """Runs (placed) side by side split the cores between them; on CUDA each takes a GPU of its own (as many at
    once as there are GPUs); a run that uses several processes, or MPS, takes the machine alone."""
    if any(exp.processes > 1 or exp.device == "mps" for exp in experiments):
        return 1
    return len(gpus) if gpus else len(experiments)


def _gpus_for(experiments: list[Experiment]) -> list[str]:
    """The GPUs to hand out one per worker when any of these (placed) runs trains on CUDA ([] otherwise)."""
    if not any(exp.device == "cuda" for exp in experiments):
        return []
    return visible_gpus(device_slots("cuda"))


def visible_gpus(count: int) -> list[str]:
    """This process's GPUs as CUDA_VISIBLE_DEVICES names them (its list when set, else 0..count-1)."""
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    names = [name.strip() for name in given.split(",") if name.strip()] if given else []
    return names[:count] if names else [str(index) for index in range(count)]


def _in_workers(experiments: list[Experiment], workers: int, gpus: list[str], progress: bool) -> list[Run]:
    pool = _pool_of(workers, gpus[:workers])
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
    """How many of these (placed) runs fit in available host memory at once (1 when a model's size is unknown).
    A run on a GPU holds little on the host once loaded: its fp32 weights pass through it."""
    sizes = [resolve_model(exp.model).parameters_at_most() for exp in experiments]
    if not sizes or None in sizes:
        return 1
    on_host = BYTES_PER_PARAMETER if any(exp.device == "cpu" for exp in experiments) else 4
    need = max(sizes) * on_host + (1 << 30)
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


def _pool_of(workers: int, gpus: list[str]) -> ProcessPoolExecutor:
    """One pool per process, kept between looks (starting a worker imports torch: seconds). With `gpus`, worker
    i sees only GPU gpus[i] (its cuda:0), so runs side by side never share one."""
    global _pool
    if _pool is not None and _pool[0] != (workers, gpus):
        shutdown()
    if _pool is None:
        threads = max(1, settings.cores() // workers)
        rows = multiprocessing.get_context("spawn").Queue()
        for row in range(workers):
            rows.put(row)
        executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_start_worker, initargs=(threads, rows, gpus))
        _pool = ((workers, gpus), executor)
    return _pool[1]


def _obtain_in_worker(exp: Experiment, progress: bool, given: settings.Settings) -> Run:
    """`obtain` under the caller's settings of this moment (a worker outlives the settings it started with)."""
    settings.use(given)
    return obtain(exp, progress)


def _start_worker(threads: int, rows, gpus: list[str]) -> None:
    import torch

    row = rows.get()
    if gpus:  # before anything initialises CUDA in this fresh (spawned) process
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[row % len(gpus)]
    torch.set_num_threads(threads)
    use_progress_row(row)


def shutdown() -> None:
    global _pool
    if _pool is not None:
        _pool[1].shutdown(wait=True, cancel_futures=True)
        _pool = None


atexit.register(shutdown)
