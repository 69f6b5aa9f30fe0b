"""Keep the cache under its size cap by dropping the oldest resumable checkpoints, never records.

A resumable checkpoint (weights + AdamW moments) is 1.6 GB for SmolLM2 and 3.2 GB for Gemma-3, and
every seed and control of every experiment has one, so a few sweeps fill a disk. Records (every
evaluated epoch's measurements) are kilobytes and always stay: a question the record already
answers never needs the checkpoint. Only a request for more epochs than recorded does; after
eviction it trains the recorded epochs again from epoch 0 without probing them (deterministic, so the
same numbers, just slower), then goes on (trainer.training.session).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from filelock import FileLock, Timeout

from trainer import settings
from trainer.cache import store
from trainer.errors import CacheCorrupt


def checkpoints() -> list[Path]:
    """Every run's checkpoint folder, oldest written first."""
    found = [(p, _stat(p)) for p in store.cache_root().glob("runs/*/checkpoint-*")]
    return [p for p, st in sorted((f for f in found if f[1] is not None), key=lambda f: f[1].st_mtime)
            if p.is_dir()]


def size_of(folder: Path) -> int:
    """Bytes in the folder; files removed meanwhile count 0 (os.walk skips folders that vanish)."""
    sizes = (_stat(Path(top) / name) for top, _, names in os.walk(folder) for name in names)
    return sum(st.st_size for st in sizes if st is not None)


def _stat(path: Path) -> os.stat_result | None:
    """None for a file another process removed meanwhile (runs train side by side)."""
    try:
        return path.stat()
    except FileNotFoundError:
        return None


def enforce_limit(keep: Path) -> list[Path]:
    """Drop the oldest checkpoints (not `keep`'s run, not a run another process holds) until under the cap."""
    limit = settings.active().cache_limit_bytes()
    sized = [(c, size_of(c)) for c in checkpoints()]
    total = sum(size for _, size in sized)
    dropped = []
    for checkpoint, size in sized:
        if total <= limit:
            break
        run = checkpoint.parent
        if run == keep or not _drop_if_free(run, checkpoint):
            continue
        total -= size
        dropped.append(checkpoint)
        print(f"[finetune] cache over ${settings.CACHE_MAX_GB_ENV}={limit / 1e9:g} GB: dropped the resumable "
              f"checkpoint {checkpoint} ({size / 1e9:.1f} GB); its record stays, and a request for more epochs "
              f"trains the recorded ones again, without probing them", file=sys.stderr)
    return dropped


def _drop_if_free(run: Path, checkpoint: Path) -> bool:
    lock = FileLock(str(run.with_suffix(".lock")), timeout=0)
    try:
        with lock:
            record = run / store.RECORD
            try:
                body = store.read_record(record) if record.exists() else None
            except CacheCorrupt:
                body = None  # the runner quarantines it on its next read
            if body is not None and body.get("checkpoint") == checkpoint.name:
                body["checkpoint"] = None  # the record stops pointing at it before it goes
                store.write_record(record, body)
            shutil.rmtree(checkpoint, ignore_errors=True)
            return True
    except Timeout:
        return False  # another process is training or resuming this run
