"""A cache that cannot be written fails clearly (path, bytes, fix) and leaves nothing half-written to read."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny import tiny

from trainer.cache import store
from trainer.cache.record import SCHEMA_VERSION
from trainer.errors import CacheWriteError
from trainer.memory import measure as memory_measure
from trainer.memory import planner as memory
from trainer.memory.measure import Measured
from trainer.runs.obtain import is_cached, obtain

TINY = tiny(epochs=1)


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


def test_a_full_disk_inside_safetensors_is_the_same_clear_error(monkeypatch, private_cache):
    """safetensors' writer reports a full disk as its own SafetensorError (seen in a real cold run), not an
    OSError: it must still become CacheWriteError, with no checkpoint left behind."""
    from safetensors import SafetensorError

    import trainer.training.checkpoint

    def disk_full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(trainer.training.checkpoint, "save_file", disk_full)
    with pytest.raises(CacheWriteError, match="No space left on device .errno 28.") as failure:
        obtain(TINY, progress=False)
    assert "bytes are free" in str(failure.value)
    assert not list(private_cache.glob("runs/*/checkpoint-*")) and not list(private_cache.glob("runs/*/.*.tmp"))


def test_an_unrelated_safetensors_error_is_not_dressed_as_a_write_failure(private_cache):
    from safetensors import SafetensorError

    with pytest.raises(SafetensorError), store.writing(private_cache / "x"):
        raise SafetensorError("invalid header")


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


def _change_a_digit(path):
    """A one-character edit that leaves valid JSON: only the checksum can tell."""
    text = path.read_text()
    at = next(i for i in range(text.index('"body"'), len(text)) if text[i].isdigit())
    path.write_text(text[:at] + str((int(text[at]) + 1) % 10) + text[at + 1:])


RECORD_DAMAGE = [_flip_a_byte, _truncate, _empty, _change_a_digit]


@pytest.mark.parametrize("damage", [_flip_a_byte, _truncate, _empty])
@pytest.mark.parametrize("file", ["model.safetensors", "optimizer.safetensors", "manifest.json"])
def test_a_damaged_checkpoint_is_detected_and_never_resumed_from(damage, file, private_cache, tmp_path,
                                                                 monkeypatch, capsys):
    run = obtain(TINY, progress=False)
    damage(Path(run.path) / run.record.checkpoint / file)
    longer = obtain(TINY.with_epochs(2), progress=False)
    assert "cannot resume" in capsys.readouterr().err
    monkeypatch.setenv("FT_CACHE_DIR", str(tmp_path / "straight"))
    straight = obtain(TINY.with_epochs(2), progress=False)
    weights = [load_file(f"{r.path}/{r.record.checkpoint}/model.safetensors") for r in (longer, straight)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def _only_entry(folder: Path) -> Path:
    entries = list(folder.glob("*.json"))
    assert len(entries) == 1, entries
    return entries[0]


def _reported_and_moved_aside(path: Path, err: str) -> None:
    assert f"{path} is truncated or does not match its checksum" in err
    assert path.with_name(path.name + ".corrupt").exists()


@pytest.mark.parametrize("damage", RECORD_DAMAGE)
def test_a_damaged_run_record_is_detected_and_recomputed(damage, capsys):
    first = obtain(TINY, progress=False)
    record = Path(first.path) / store.RECORD
    damage(record)
    assert not is_cached(TINY), "a damaged record must not answer a request"
    again = obtain(TINY, progress=False)
    _reported_and_moved_aside(record, capsys.readouterr().err)
    assert not again.from_cache
    assert again.evaluation(1).margins == first.evaluation(1).margins
    assert store.read_record(record)["epochs_done"] == 1


def _old_schema(body: dict) -> dict:
    """The untyped record of schema 1: no `schema` field, stop and events as they were."""
    return {k: v for k, v in body.items() if k != "schema"}


def _future_schema(body: dict) -> dict:
    return body | {"schema": SCHEMA_VERSION + 1}


def _renamed_field(body: dict) -> dict:
    """The schema number is right but a field is not this code's (a hand-edited or half-migrated record)."""
    body = dict(body)
    body["model"] = {("n_params" if k == "parameters" else k): v for k, v in body["model"].items()}
    return body


@pytest.mark.parametrize("rewrite", [_old_schema, _future_schema, _renamed_field])
def test_a_record_of_another_schema_is_moved_aside_and_recomputed(rewrite, capsys):
    """A checksum-valid record of another shape is never read field by field into a KeyError."""
    first = obtain(TINY, progress=False)
    record = Path(first.path) / store.RECORD
    store.write_record(record, rewrite(store.read_record(record)))
    assert not is_cached(TINY), "a record of another schema must not answer a request"
    again = obtain(TINY, progress=False)
    err = capsys.readouterr().err
    assert "schema" in err or "unknown fields" in err
    assert record.with_name(record.name + ".corrupt").exists()
    assert not again.from_cache and again.evaluation(1).margins == first.evaluation(1).margins
    assert store.read_record(record)["schema"] == SCHEMA_VERSION


@pytest.mark.parametrize("damage", RECORD_DAMAGE)
def test_a_damaged_shared_baseline_is_detected_and_recomputed(damage, private_cache, capsys):
    first = obtain(TINY, progress=False)
    baseline = _only_entry(private_cache / "baselines")
    damage(baseline)
    other_seed = obtain(TINY.with_seed(1), progress=False)  # a new run reads the shared epoch-0 probes
    _reported_and_moved_aside(baseline, capsys.readouterr().err)
    assert other_seed.evaluation(0).margins == first.evaluation(0).margins


@pytest.mark.parametrize("damage", RECORD_DAMAGE)
def test_a_damaged_memory_trace_is_detected_and_traced_again(damage, private_cache, capsys):
    first = memory.plan("tiny-qwen2", "sgd", batch=2, seq=16)
    traces = sorted((private_cache / "memory-traces").glob("*.json"))  # one per traced depth (1 and 2 layers)
    assert len(traces) == 2
    original = store.read_record(traces[0])
    damage(traces[0])
    assert memory.plan("tiny-qwen2", "sgd", batch=2, seq=16) == first
    _reported_and_moved_aside(traces[0], capsys.readouterr().err)
    assert store.read_record(traces[0]) == original  # traced again, and kept whole


@pytest.mark.parametrize("damage", RECORD_DAMAGE)
def test_a_damaged_memory_measurement_is_detected_and_measured_again(damage, private_cache, monkeypatch, capsys):
    kept = Measured(model="tiny-qwen2", recipe="sgd", batch=2, seq=16, device="cpu", peak_bytes=123_456,
                    trainable_bytes=10, optimizer_state_bytes=0, seconds=0.1)
    monkeypatch.setattr(memory_measure, "_measure_in_fresh_process", lambda *args: kept)
    memory_measure.measure("tiny-qwen2", "sgd", batch=2, seq=16)
    entry = _only_entry(private_cache / "memory-measurements")
    damage(entry)
    calls = []
    monkeypatch.setattr(memory_measure, "_measure_in_fresh_process", lambda *args: calls.append(args) or kept)
    assert memory_measure.measure("tiny-qwen2", "sgd", batch=2, seq=16) == kept
    _reported_and_moved_aside(entry, capsys.readouterr().err)
    assert len(calls) == 1, "the damaged measurement was used instead of measuring again"
    assert store.read_record(entry)["peak_bytes"] == 123_456  # the new entry is whole
