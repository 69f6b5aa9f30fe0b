"""Train one run in several processes: torchrun starts one rank per process, each trains its share of
every batch (gloo on a CPU, NCCL on GPUs), the main rank probes and writes the record; this process waits.

A run that fails names the rank that failed first and its error. The run's folder only ever holds
complete checkpoints and records (written atomically by the main rank), so a rank that dies loses at
most the epoch in flight, as a single-process run would.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from trainer import settings
from trainer.cache import store
from trainer.errors import SuiteError
from trainer.experiment import Experiment

RANK_ENTRY = "trainer.runs.rank_main"
STDERR_FD = 2  # the descriptor, not sys.stderr: a captured sys.stderr may have none
# What a rank reports when another rank died under it (gloo, NCCL): an echo, not the cause.
# Run the command given after the parent's pid with SIGTERM as its parent-death signal (prctl(2)
# PR_SET_PDEATHSIG, kept across exec): a killed pytest or Ray worker takes its torchrun with it, and torchrun
# stops its ranks on SIGTERM, so none trains on beside the next attempt at the run. Set after exec in a fresh
# interpreter, not between fork and exec (preexec_fn is unsafe where the parent has threads, as Ray workers do).
WITH_PARENT = """import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
if os.getppid() != int(sys.argv[1]):
    sys.exit("the process that started torchrun is gone")
os.execv(sys.argv[2], sys.argv[2:])"""
PEER_LOST = ("Connection closed by peer", "remote worker crashing", "NCCL communicator was aborted")


class RankFailed(SuiteError):
    """A rank of a several-process run failed: its number, its error, and where the run stands. `killed`: no
    rank reported an error of its own (a signal, most often the kernel's out-of-memory killer)."""

    def __init__(self, message: str, killed: bool = False):
        super().__init__(message)
        self.killed = killed

    def __reduce__(self):  # rebuilt from its fields when it crosses from a worker process or a Ray task
        return type(self), (str(self), self.killed)


def train_in_ranks(exp: Experiment, folder: Path, *, key: str, components: dict, baseline_path: Path,
                   progress: bool, entry: str | None = None) -> None:
    """Run `exp` (placed, processes > 1) under torchrun and wait; RankFailed when any rank fails, after
    removing whatever a killed rank left half-written. `entry`: the rank's module (or script) to run."""
    with tempfile.TemporaryDirectory(prefix="ft-ranks-") as scratch:
        spec = Path(scratch) / "spec.json"
        spec.write_text(json.dumps({
            "experiment": dataclasses.asdict(exp), "folder": str(folder), "key": key, "components": components,
            "baseline_path": str(baseline_path), "progress": progress, "errors": scratch,
            "settings": _plain(settings.active().resolved())}))
        done = subprocess.run(_command(exp, entry or RANK_ENTRY, spec), env=_environment(exp), stdin=subprocess.DEVNULL,
                              stdout=STDERR_FD if progress else subprocess.DEVNULL,  # this process's stderr
                              stderr=None if progress else subprocess.PIPE, text=True)
        if done.returncode != 0:
            store.remove_unfinished(folder)
            raise RankFailed(_failure(exp, Path(scratch), done.returncode, done.stderr),
                             killed=not list(Path(scratch).glob("rank-*.txt")))


def _command(exp: Experiment, entry: str, spec: Path) -> list[str]:
    """torchrun with a free port (--standalone), one rank per process; `entry` a module or a script path.
    Started through a few lines that stop it with this process (see `WITH_PARENT`)."""
    target = ["-m", entry] if not entry.endswith(".py") else [entry]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={exp.processes}",
                "--max_restarts=0", *target, str(spec)]
    if not sys.platform.startswith("linux"):
        return torchrun
    return [sys.executable, "-c", WITH_PARENT, str(os.getpid()), *torchrun]


def _environment(exp: Experiment) -> dict[str, str]:
    """Each rank gets its share of the cores; accelerate reads the CPU choice from its own variable."""
    threads = max(1, settings.cores() // exp.processes)
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    if exp.device == "cpu":
        env |= {"ACCELERATE_USE_CPU": "true"}
    return env


def _failure(exp: Experiment, scratch: Path, code: int, stderr: str | None) -> str:
    reports = sorted(scratch.glob("rank-*.txt"), key=_blame_order)
    head = f"{exp.label}: {exp.processes}-process run failed (torchrun exit {code})"
    tail = "complete epochs stay cached and the next request resumes from them"
    if reports:
        rank = reports[0].stem.split("-")[1]
        error = reports[0].read_text().rstrip()
        return f"{head}: rank {rank} failed first with {error.splitlines()[-1]}\n{error}\n({tail})"
    detail = (stderr or "").strip().splitlines()[-20:]
    return f"{head} before any rank reported an error (killed, or out of memory?)\n" + "\n".join(detail) \
        + f"\n({tail})"


def _blame_order(report: Path) -> tuple[bool, int, int]:
    """The rank whose own error started it: not one that only saw a peer disappear, then the earliest."""
    echo = any(words in report.read_text() for words in PEER_LOST)
    return echo, report.stat().st_mtime_ns, int(report.stem.split("-")[1])


def _plain(chosen: settings.Settings) -> dict:
    return dataclasses.asdict(chosen)
