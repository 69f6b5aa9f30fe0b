"""The cache: content-addressed run records and checkpoints, written atomically under a lock.

Layout under the root (default ~/.cache/finetune-behaviors, or $FT_CACHE_DIR):
  runs/<key>/record.json           metrics + probe outputs for every evaluated epoch (checksummed)
  runs/<key>/checkpoint-<epoch>/   latest resumable state: model + optimizer safetensors, manifest last
  models/<name>-<fingerprint>/     dequantized wheel models as safetensors
A directory counts as complete only once its manifest exists; a record only if its checksum matches.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from trainer import settings
from trainer.errors import CacheCorrupt, CacheWriteError

MANIFEST = "manifest.json"
RECORD = "record.json"
DECISIONS = "decisions.json"  # beside a run's record: how questions about it were decided (not measured data)
_CACHEDIR_TAG = "Signature: 8a477f597d28d172789f06886806bc55\n# finetune-behaviors cache; safe to delete.\n"


def cache_root() -> Path:
    root = settings.active().cache_root()
    if not (root / "CACHEDIR.TAG").exists():
        with writing(root):
            _mark_cache(root)
    return root


def _mark_cache(root: Path) -> None:
    """A new cache says what it is (and, by CACHEDIR.TAG, that backups may skip it)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "README.md").write_text("Cache of fine-tuning runs (records, checkpoints, converted models).\n"
                                    f"Override with ${settings.CACHE_DIR_ENV}. Deleting it only costs recomputation.\n")
    (root / ".gitignore").write_text("*\n")
    (root / "CACHEDIR.TAG").write_text(_CACHEDIR_TAG)


@contextlib.contextmanager
def writing(path: Path, needed: int | None = None, written: Path | None = None) -> Iterator[None]:
    """Turn a failed write (disk full, read-only, a file where a folder should be) into an error that
    names the path, the bytes at stake and what to do; nothing half-written is left to be read."""
    try:
        yield
    except CacheWriteError:
        raise
    except Exception as error:  # noqa: BLE001 - only write failures are turned into CacheWriteError
        number = _write_errno(error)
        if number not in _WRITE_ERRNOS:
            raise
        if needed is not None:
            need = f"about {needed:,} bytes"
        elif written is not None:
            need = f"more than the {_bytes_in(written):,} bytes written before it failed"
        else:
            need = "a few kilobytes (a new cache's marker files)"
        reason = getattr(error, "strerror", None) or os.strerror(number)
        raise CacheWriteError(
            f"cannot write the cache at {path}: {reason} (errno {number}). It needs {need}; "
            f"{_free_bytes(path)} bytes are free there. Free disk space, lower --ft-cache-max-gb "
            f"(${settings.CACHE_MAX_GB_ENV}), or point --ft-cache-dir (${settings.CACHE_DIR_ENV}) at a writable "
            "folder with room. "
            "Nothing half-written was kept.") from error


_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR}
_OS_ERROR_IN_TEXT = re.compile(r"\(os error (\d+)\)")


def _write_errno(error: Exception) -> int | None:
    """The OS error number of a failed write: an OSError's own, or the one safetensors' Rust writer puts in
    its message ("I/O error: No space left on device (os error 28)"), which is not an OSError."""
    if isinstance(error, OSError):
        return error.errno
    found = _OS_ERROR_IN_TEXT.search(str(error)) if type(error).__name__ == "SafetensorError" else None
    return int(found.group(1)) if found else None


def _bytes_in(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def _free_bytes(path: Path) -> str:
    for candidate in (path, *path.parents):
        if candidate.exists() and candidate.is_dir():
            return f"{shutil.disk_usage(candidate).free:,}"
    return "an unknown number of"


@contextlib.contextmanager
def locked(lock_path: Path) -> Iterator[None]:
    """An inter-process lock (pytest-xdist workers share the cache)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_path)):
        yield


@contextlib.contextmanager
def locked_if_free(lock_path: Path) -> Iterator[bool]:
    """The lock if nobody holds it at this moment (True), else nothing (False): for tidying up that the
    holder does itself anyway, and that must not wait behind a long training run."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def write_text_atomic(path: Path, text: str) -> None:
    """Temp file in the same folder, fsync, rename: readers see the old file or the new one."""
    with writing(path, needed=len(text.encode())):
        _write_text_atomic(path, text)


def _write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a cache should read like any file
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Fill a temp sibling folder, then rename it into place; a crash leaves only a temp folder."""
    with writing(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
        os.chmod(tmp, 0o777 & ~_umask())
    try:
        with writing(final, written=tmp):
            yield tmp
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_unfinished(folder: Path) -> int:
    """Delete temp files and folders that a killed writer left in `folder` (call it under the folder's
    lock, so no live writer owns them); they were never renamed into place, so nothing reads them."""
    leftovers = list(folder.glob(".*.tmp")) if folder.is_dir() else []
    for path in leftovers:
        _remove(path)
    if leftovers:
        print(f"[finetune] removed {len(leftovers)} unfinished temporary file(s) an interrupted run left in {folder}",
              file=sys.stderr)
    return len(leftovers)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def mark_used(path: Path) -> None:
    """Touch `path`: the cache's ages (`python -m trainer cache --older-than`) count from the last use, so a
    converted model every run loads is not taken for an unused one."""
    os.utime(path)


def write_manifest(folder: Path, extra: dict) -> None:
    """Checksums of every file in the folder; written last, so its presence means complete."""
    files = {p.name: file_sha256(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST}
    write_text_atomic(folder / MANIFEST, json.dumps({"files": files, **extra}, indent=2))


def read_manifest(folder: Path, verify: bool = True) -> dict:
    path = folder / MANIFEST
    if not path.is_file():
        raise CacheCorrupt(f"{folder} has no {MANIFEST}: it was never completed")
    manifest = json.loads(path.read_text())
    if verify:
        for name, expected in manifest["files"].items():
            file = folder / name
            if not file.is_file() or file_sha256(file) != expected:
                raise CacheCorrupt(f"{file} is missing or does not match its checksum")
        planted = sorted(p.name for p in folder.iterdir() if p.name != MANIFEST and p.name not in manifest["files"])
        if planted:
            raise CacheCorrupt(f"{folder} holds {planted}, which its manifest does not list (something was added "
                               "after it was written; a pickle there would run code if loaded), so it is not used")
    return manifest


def write_record(path: Path, body: dict) -> None:
    text = json.dumps(body, sort_keys=True)
    envelope = {"sha256": hashlib.sha256(text.encode()).hexdigest(), "body": body}
    write_text_atomic(path, json.dumps(envelope, indent=1, sort_keys=True))


def read_record(path: Path) -> dict | None:
    """The record's body, None when absent; CacheCorrupt when it exists but fails its checksum."""
    if not path.is_file():
        return None
    try:
        envelope = json.loads(path.read_text())
        body = envelope["body"]
        ok = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest() == envelope["sha256"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
        ok = False
    if not ok:
        raise CacheCorrupt(f"{path} is truncated or does not match its checksum")
    return body


def read_record_or_quarantine(path: Path) -> dict | None:
    """The record's body; a corrupt one is moved aside, reported, and read as absent (so recomputed)."""
    try:
        return read_record(path)
    except CacheCorrupt as error:
        moved = quarantine(path)
        print(f"[finetune] {error}; moved to {moved} and recomputing", file=sys.stderr)
        return None


def run_dir(key: str) -> Path:
    return cache_root() / "runs" / key


def quarantine(path: Path) -> Path:
    """Move a corrupt entry aside (never delete evidence silently); it will be recomputed."""
    target = path.with_name(f"{path.name}.corrupt")
    _remove(target)
    os.replace(path, target)
    return target


def _remove(path: Path) -> None:
    """A file or a folder, if it is there."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
