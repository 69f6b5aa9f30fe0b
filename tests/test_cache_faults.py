"""A cache that cannot be written fails clearly (path, bytes, fix) and leaves nothing half-written to read."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from trainer import Experiment, store
from trainer.errors import CacheWriteError
from trainer.runner import obtain

TINY = Experiment(model="tiny-llama", epochs=1, eval_every=1, lr=1e-3, gen_tokens=4)


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_while_writing_a_record_names_the_path_and_the_bytes(monkeypatch, private_cache):
    monkeypatch.setattr(store.os, "fsync", _disk_full)
    with pytest.raises(CacheWriteError) as failure:
        obtain(TINY, progress=False)
    message = str(failure.value)
    assert str(private_cache) in message and "No space left on device" in message
    assert "bytes" in message and "--ft-cache-dir" in message
    assert not list(private_cache.glob("runs/*/record.json"))  # no half-written record to read later


def test_a_full_disk_while_writing_a_checkpoint_leaves_no_checkpoint(private_cache):
    target = private_cache / "runs" / "k" / "checkpoint-1"
    expected = pytest.raises(CacheWriteError, match="more than the 5 bytes written before it failed")
    with expected, store.atomic_dir(target) as folder:
        (folder / "part").write_bytes(b"12345")
        _disk_full()
    assert not target.exists() and not list(target.parent.glob(".checkpoint-1.*"))


def test_a_cache_dir_that_cannot_be_a_folder_is_a_clear_error(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("FT_CACHE_DIR", str(blocker / "cache"))
    with pytest.raises(CacheWriteError, match="a-file/cache") as failure:
        obtain(TINY, progress=False)
    assert "writable folder" in str(failure.value)


def _flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _empty(path):
    path.write_bytes(b"")


@pytest.mark.parametrize("damage", [_flip_a_byte, _truncate, _empty])
@pytest.mark.parametrize("file", ["model.safetensors", "optimizer.safetensors", "manifest.json"])
def test_a_damaged_checkpoint_is_detected_and_never_resumed_from(damage, file, private_cache, tmp_path,
                                                                 monkeypatch, capsys):
    run = obtain(TINY, progress=False)
    damage(Path(run.path) / run.body["checkpoint"] / file)
    longer = obtain(TINY.with_epochs(2), progress=False)
    assert "cannot resume" in capsys.readouterr().err
    monkeypatch.setenv("FT_CACHE_DIR", str(tmp_path / "straight"))
    straight = obtain(TINY.with_epochs(2), progress=False)
    weights = [load_file(f"{r.path}/{r.body['checkpoint']}/model.safetensors") for r in (longer, straight)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
