"""What the cache holds and what it costs on disk, and removing entries by model or age.

`python -m trainer cache` lists every entry with its size, age and model, and the totals;
`--remove` with `--model` and/or `--older-than` shows what would go and `--yes` removes it. An entry
another process holds (a run training, a model converting) is skipped, never pulled from under it.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from trainer.cache import retention, store
from trainer.errors import ConfigError
from trainer.units import format_bytes

# Top-level folders of the cache and what they hold, in the order the report lists them.
KINDS = {"runs": "run", "models": "converted model", "gguf": "assembled GGUF", "baselines": "baseline probes",
         "fingerprints": "fingerprint", "memory-traces": "memory trace", "memory-measurements": "memory measurement"}


@dataclass(frozen=True)
class CacheEntry:
    kind: str
    path: Path
    size: int
    modified: float
    model: str | None
    label: str


def entries(root: Path | None = None) -> list[CacheEntry]:
    """Every entry directly under the cache's known folders (lock files and temporaries left out)."""
    root = root or store.cache_root()
    found = []
    for folder, kind in KINDS.items():
        for path in sorted((root / folder).glob("*")) if (root / folder).is_dir() else []:
            if path.suffix in (".lock", ".tmp") or path.name.startswith("."):
                continue
            model, label = _describe(path, kind)
            found.append(CacheEntry(kind, path, _size(path), _modified(path), model, label))
    return found


def listing(found: list[CacheEntry], model: str | None = None) -> str:
    """Largest first, then totals per kind and per model."""
    shown = [e for e in found if model is None or e.model == model]
    now = time.time()
    lines = [f"{'size':>11}  {'age':>7}  {'kind':19} {'model':18} entry"]
    for entry in sorted(shown, key=lambda e: -e.size):
        lines.append(f"{format_bytes(entry.size):>11}  {_age(now - entry.modified):>7}  {entry.kind:19} "
                     f"{entry.model or '-':18} {entry.label}")
    lines.append("")
    for title, key in (("by kind", lambda e: e.kind), ("by model", lambda e: e.model or "-")):
        totals: dict[str, int] = defaultdict(int)
        for entry in shown:
            totals[key(entry)] += entry.size
        lines.append(f"{title}: " + ", ".join(f"{name} {format_bytes(size)}" for name, size in
                                               sorted(totals.items(), key=lambda kv: -kv[1])))
    lines.append(f"total: {format_bytes(sum(e.size for e in shown))} in {len(shown)} entries "
                 f"({store.cache_root() if found else 'empty cache'})")
    return "\n".join(lines)


def _describe(path: Path, kind: str) -> tuple[str | None, str]:
    if kind == "run":
        record = path / "record.json"
        try:
            body = json.loads(record.read_text())["body"]
            experiment = body["experiment"]
            checkpoints = sorted(p.name for p in path.glob("checkpoint-*"))
            return experiment["model"], (f"{path.name[:12]} {experiment.get('method', {}).get('kind', '?')} "
                                         f"lr={experiment.get('lr')} seed={experiment.get('seed')} "
                                         f"data={experiment.get('data')} epochs={body.get('epochs_done')} "
                                         f"{' '.join(checkpoints) or 'no checkpoint'}")
        except (OSError, ValueError, KeyError, TypeError):
            return None, f"{path.name[:12]} (no readable record)"
    if kind == "converted model":
        return path.name.rsplit("-", 1)[0], path.name
    return None, path.name


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else retention.size_of(path)


def _modified(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _age(seconds: float) -> str:
    for unit, scale in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= scale:
            return f"{seconds / scale:.0f} {unit}"
    return f"{seconds:.0f} s"


def parse_age(text: str) -> float:
    """Seconds from '7d', '12h', '30min' or '45s'."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(d|h|min|s)\s*", text or "")
    if match is None:
        raise ConfigError(f"age {text!r}", ["write a number and a unit: '7d', '12h', '30min' or '45s'"])
    return float(match.group(1)) * {"d": 86400, "h": 3600, "min": 60, "s": 1}[match.group(2)]


def select(found: list[CacheEntry], model: str | None, older_than: float | None) -> list[CacheEntry]:
    """Entries of `model` (if given) not modified for `older_than` seconds (if given); one of them is needed."""
    if model is None and older_than is None:
        raise ConfigError("cache removal", ["name what to remove: --model NAME and/or --older-than AGE"])
    now = time.time()
    return [e for e in found if (model is None or e.model == model)
            and (older_than is None or now - e.modified >= older_than)]


def remove(chosen: list[CacheEntry]) -> tuple[list[CacheEntry], list[CacheEntry]]:
    """Remove each entry under its lock; (removed, skipped because another process holds it)."""
    removed, busy = [], []
    for entry in chosen:
        if not entry.path.is_dir():  # single files are replaced atomically: unlinking one is safe
            entry.path.unlink(missing_ok=True)
            removed.append(entry)
            continue
        try:  # folders (runs, converted models) are written under "<folder>.lock"
            with FileLock(str(entry.path.with_name(entry.path.name + ".lock")), timeout=0):
                shutil.rmtree(entry.path)
            removed.append(entry)
        except Timeout:
            busy.append(entry)
    return removed, busy
