"""Kill a tiny training run with SIGKILL at named points of its life, and at random moments.

Run by test_kill_resume.py as `python kill_points.py ROOT SEED`. One process imports everything and
trains the uninterrupted reference run in ROOT/straight; each kill point is a forked child training the
same experiment in its own cache ROOT/<index>, killed by signal 9 where the point says (a hook raises
SIGKILL at its own pid) or, for the random points, by this process after a random delay. One JSON line
per point reports how the child ended. One thread everywhere, so every process computes identically.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save as serialize
from tiny import tiny
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

import trainer.cache.store
import trainer.training.checkpoint
import trainer.training.session
from trainer import settings
from trainer.runs.obtain import obtain

EXPERIMENT = tiny(epochs=3)
RANDOM_KILLS = 3


def die(*args, **kwargs) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def half_written(tensors: dict, filename: str, *args, **kwargs) -> None:
    """The first half of the safetensors file is on disk when the process dies."""
    data = serialize(tensors)
    Path(filename).write_bytes(data[: len(data) // 2])
    die()


def on_call(owner, name: str, nth: int, action: Callable = die, when: Callable = lambda *a, **k: True) -> None:
    """Run `action` instead of owner.name at its nth call that satisfies `when`."""
    original = getattr(owner, name)
    calls = 0

    def wrapper(*args, **kwargs):
        nonlocal calls
        if when(*args, **kwargs):
            calls += 1
            if calls == nth:
                action(*args, **kwargs)
        return original(*args, **kwargs)

    setattr(owner, name, wrapper)


def named(filename: str) -> Callable:
    return lambda src, dst, *a, **k: Path(dst).name == filename


def at_optimizer_step(nth: int, register: Callable) -> None:
    """`register`: PyTorch's global pre- or post-hook on every optimizer's step."""
    calls = 0

    def hook(optimizer, args, kwargs):
        nonlocal calls
        calls += 1
        if calls == nth:
            die()

    register(hook)


# Each epoch is one optimizer step, then a probe, then checkpoint-<epoch> (model, optimizer, manifest,
# rename), then the record, then the previous checkpoint is removed. Call 1 of the probe is the baseline.
POINTS: dict[str, Callable[[], None]] = {
    "epoch 2, gradients computed, before its optimizer step": lambda: at_optimizer_step(
        2, register_optimizer_step_pre_hook),
    "epoch 2, weights stepped, nothing saved yet": lambda: at_optimizer_step(2, register_optimizer_step_post_hook),
    "epoch 2, while probing": lambda: on_call(trainer.training.session, "probe_model", 3),
    "checkpoint-2, model file half-written": lambda: on_call(trainer.training.checkpoint, "save_file", 3, half_written),
    "checkpoint-2, optimizer file half-written": lambda: on_call(
        trainer.training.checkpoint, "save_file", 4, half_written),
    "checkpoint-2, tensors written, manifest not begun": lambda: on_call(trainer.cache.store, "write_manifest", 2),
    "checkpoint-2, manifest in its temp file": lambda: on_call(os, "replace", 2, when=named("manifest.json")),
    "checkpoint-2 in place, record still at epoch 1": lambda: on_call(
        trainer.cache.store, "write_record", 2, when=lambda path, body: Path(path).name == "record.json"),
    "record of epoch 2 in its temp file": lambda: on_call(os, "replace", 2, when=named("record.json")),
    "record at epoch 2, checkpoint-1 not yet removed": lambda: on_call(
        trainer.training.session.shutil, "rmtree", 1, when=lambda path, *a, **k: Path(path).name == "checkpoint-1"),
    "checkpoint-3 (the last), model file half-written": lambda: on_call(
        trainer.training.checkpoint, "save_file", 5, half_written),
}


def train_in(cache: Path) -> None:
    settings.use(settings.Settings(cache_dir=str(cache)))
    obtain(EXPERIMENT, progress=False)


def child(cache: Path, install: Callable[[], None] | None) -> int:
    """Fork a child that installs its kill point and trains; a random-kill child waits after finishing,
    so the kill always meets a live process."""
    pid = os.fork()
    if pid == 0:
        try:
            if install:
                install()
            train_in(cache)
            if install is None:
                signal.pause()
            os._exit(0)
        except BaseException:
            traceback.print_exc()
            os._exit(3)
    return pid


def ending(pid: int) -> dict:
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return {"signal": os.WTERMSIG(status)}
    return {"exit_code": os.WEXITSTATUS(status)}


def main(root: Path, seed: int) -> None:
    torch.set_num_threads(1)  # before any computation: forked children then share no thread pool
    started = time.perf_counter()
    train_in(root / "straight")  # the reference, and a warm-up: children fork with everything imported
    print(json.dumps({"point": "straight", "seconds": round(time.perf_counter() - started, 3)}), flush=True)
    started = time.perf_counter()
    print(json.dumps({"point": "timing", **ending(child(root / "timing", lambda: None))}), flush=True)
    duration = time.perf_counter() - started
    for index, (name, install) in enumerate(POINTS.items()):
        outcome = ending(child(root / str(index), install))
        print(json.dumps({"point": name, "cache": str(root / str(index)), **outcome}), flush=True)
    draw = random.Random(seed)
    for index in range(len(POINTS), len(POINTS) + RANDOM_KILLS):
        delay = draw.uniform(0, duration)
        pid = child(root / str(index), None)
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        name = f"random: {delay:.3f} s into a {duration:.3f} s run (seed {seed})"
        print(json.dumps({"point": name, "cache": str(root / str(index)), **ending(pid)}), flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
