"""Content keys: a result is filed under a hash of what was asked, the libraries and the code that made it."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from collections.abc import Iterable
from pathlib import Path

from trainer.cache import store

# Libraries whose version changes what a run, a trace or a measurement computes.
OUTCOME_LIBRARIES = ("torch", "transformers", "peft", "accelerate")


def content_key(parts: dict, length: int = 32) -> str:
    """A stable hash of JSON-able parts (sorted keys, so the order they were built in does not matter)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:length]


def library_versions(names: Iterable[str]) -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in names}


def source_digest(roots: Iterable[Path]) -> str:
    """A hash of every *.py below `roots` (path and bytes, in sorted order): any edit, addition,
    removal or rename of a module there changes it."""
    digest = hashlib.sha256()
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            digest.update(path.relative_to(root.parent).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def cache_path(kind: str, what: dict, sources: Iterable[Path]) -> Path:
    """Where a traced or measured result lives (a checksummed record, as runs are): keyed on what was
    asked, the libraries and the source of the modules that compute it."""
    parts = what | library_versions(OUTCOME_LIBRARIES) | {"code": source_digest(sources)}
    return store.cache_root() / kind / f"{content_key(parts, 24)}.json"
