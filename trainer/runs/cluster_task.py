"""What runs on a Ray node for one run (trainer.runs.cluster sends it): check that this node sees the same
cache and computes the same run key as the pytest process, say where the attempt starts, train, report.

Imported by Ray workers, so it imports Ray only inside the task.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path
from typing import Any

from trainer import settings
from trainer.cache import store
from trainer.cache.keys import content_key
from trainer.errors import SuiteError
from trainer.experiment import Experiment
from trainer.runs.keys import key_components
from trainer.runs.obtain import obtain, read_run_record


class ClusterMismatch(SuiteError):
    """A node computes another key for a run: it runs other code, libraries or model files than this process."""


class CacheNotShared(SuiteError):
    """A node does not see the cache folder the pytest process uses."""


class AttemptLog:
    """A Ray actor on the pytest process's node: each task says where it starts before it trains, so a task
    that dies can still be named (its node, pid, and the epoch it resumed from)."""

    def __init__(self) -> None:
        self.started: dict[str, list[dict]] = {}

    def start(self, key: str, entry: dict) -> None:
        self.started.setdefault(key, []).append(entry)

    def of(self, key: str) -> list[dict]:
        return self.started.get(key, [])


def train_task(exp: Experiment, components: dict, given: settings.Settings, marker: str, log: Any,
               attempt: int) -> dict:
    """On a node: check the cache and the key, say where this attempt starts, train (resuming what is cached),
    and report where it trained and whether it trained (another session's task may have, meanwhile)."""
    import ray

    cpus = max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
    settings.use(given.replace(cores=cpus))  # Ray does not pin a task's CPUs: its share is set here
    _use_threads(exp, cpus)
    _check_cache_is_shared(Path(marker))
    mine = key_components(exp)
    if mine != components:
        raise ClusterMismatch(mismatch_words(exp, components, mine))
    key = content_key(components)
    folder = store.run_dir(key)
    record = read_run_record(folder) if folder.is_dir() else None
    node = {"host": socket.gethostname(), "ip": ray.util.get_node_ip_address(),
            "node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
            "attempt": attempt, "from_epoch": record.epochs_done if record else 0}
    _say_where(log, key, node, ray)
    started = time.perf_counter()
    run = obtain(exp, progress=False)  # under the run's lock
    return {"node": node, "folder": str(folder), "trained": not run.from_cache,
            "seconds": time.perf_counter() - started}


def _use_threads(exp: Experiment, cpus: int) -> None:
    """A one-process run computes with the CPUs Ray gave it (ranks of a several-process run get their share
    from the settings, through torchrun's environment)."""
    if exp.processes == 1:
        import torch

        torch.set_num_threads(cpus)


def _check_cache_is_shared(marker: Path) -> None:
    """The pytest process wrote `marker` into its cache before sending; a node that cannot see it would train
    into a cache nobody reads."""
    if not marker.exists():
        raise CacheNotShared(
            f"this node ({socket.gethostname()}) does not see the cache folder the pytest process uses: "
            f"{marker.parent.parent} (no {marker.name} there). The cache must be one folder every node mounts at "
            f"the same path (NFS, CephFS, Lustre...): set {settings.CACHE_DIR_ENV} or --ft-cache-dir to it")


def _say_where(log: Any, key: str, node: dict, ray: Any) -> None:
    """Best effort: a lost attempt log costs the names in a failure message, never the run."""
    with contextlib.suppress(ray.exceptions.RayError, TimeoutError):
        ray.get(log.start.remote(key, node), timeout=30)


def mismatch_words(exp: Experiment, theirs: dict, mine: dict) -> str:
    """Which parts of the run key differ between the pytest process and this node, with both values."""
    differing = [f"{name}: pytest process {theirs.get(name)!r}, this node {mine.get(name)!r}"
                 for name in sorted(set(theirs) | set(mine)) if theirs.get(name) != mine.get(name)]
    return (f"{exp.label}: this node ({socket.gethostname()}) computes another run key than the pytest process, "
            f"so it would train into another cache entry. Every node must run the same code, libraries and model "
            f"files; they differ in:\n  " + "\n  ".join(differing)
            + "\nInstall the same commit and environment on every node (and share the model folders)")
