"""Several processes train one run (torchrun, gloo on these CPUs) and end where one process ends.

Accelerate's own CPU test trains a one-process baseline at the full batch and compares the data-parallel
model with torch.testing.assert_close; these do the same through the suite's front door (obtain).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny import tiny

from trainer.cache import store
from trainer.errors import ConfigError
from trainer.experiment import LoRA
from trainer.runs import obtain as obtain_module
from trainer.runs import ranks
from trainer.runs.obtain import obtain

# Batches of 4 then 1 (five examples): the short last batch leaves one rank without rows, the case the
# weighting has to get right.
TWO_EPOCHS = dict(epochs=2, batch_size=4, device="cpu")


def weights_at(run, epoch: int) -> dict[str, torch.Tensor]:
    return load_file(str(Path(run.path) / f"checkpoint-{epoch}" / "model.safetensors"))


def test_two_gloo_processes_end_with_the_parameters_of_one_process():
    one = obtain(tiny(**TWO_EPOCHS, processes=1), progress=False)
    two = obtain(tiny(**TWO_EPOCHS, processes=2), progress=False)
    assert two.record.placement.processes == 2 and two.record.placement.backend == "gloo"
    assert one.path != two.path  # the process count is part of the key
    torch.testing.assert_close(weights_at(two, 2), weights_at(one, 2))
    assert [e.mean_margin for e in two.record.evaluations] == pytest.approx(
        [e.mean_margin for e in one.record.evaluations], abs=1e-5)
    assert [log.loss for log in two.record.train_log] == pytest.approx([log.loss for log in one.record.train_log])


def test_a_two_process_run_resumes_from_its_checkpoint_to_the_one_process_result():
    first = obtain(tiny(**TWO_EPOCHS | {"epochs": 1}, processes=2), progress=False)
    resumed = obtain(tiny(**TWO_EPOCHS, processes=2), progress=False)
    assert resumed.path == first.path and resumed.record.epochs_done == 2
    assert resumed.record.train_log[0] == first.record.train_log[0]  # epoch 1 was not trained again
    one = obtain(tiny(**TWO_EPOCHS, processes=1), progress=False)
    torch.testing.assert_close(weights_at(resumed, 2), weights_at(one, 2))


def test_a_rank_that_fails_fails_the_run_with_its_error_and_keeps_the_complete_epochs(monkeypatch):
    real_entry = ranks.RANK_ENTRY
    monkeypatch.setattr(ranks, "RANK_ENTRY", str(Path(__file__).with_name("crashing_rank.py")))
    exp = tiny(**TWO_EPOCHS, processes=2)
    with pytest.raises(ranks.RankFailed, match=r"rank 1 failed first with RuntimeError: rank 1 ran out of luck"):
        obtain(exp, progress=False)
    folder = store.run_dir(ranks_key(exp))
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith("checkpoint")) == ["record.json"]
    assert not list(folder.glob(".*.tmp"))  # nothing half-written stays
    monkeypatch.setattr(ranks, "RANK_ENTRY", real_entry)
    kept = obtain(exp.with_epochs(1), progress=False)
    assert kept.from_cache and kept.record.epochs_done == 1


def ranks_key(exp) -> str:
    from trainer.runs.keys import experiment_key

    return experiment_key(exp)


def test_fsdp2_with_host_offload_on_two_processes_trains_and_resumes_to_the_unsharded_result():
    """The offload recipe's sharded path (FSDP2 fully_shard + CPUOffloadPolicy, gloo): one epoch, then a
    resumed second, end with the one-process unsharded run's weights and AdamW moments."""
    first = obtain(tiny(**TWO_EPOCHS | {"epochs": 1}, processes=2, offload="fsdp2"), progress=False)
    sharded = obtain(tiny(**TWO_EPOCHS, processes=2, offload="fsdp2"), progress=False)
    assert sharded.path == first.path and sharded.record.train_log[0] == first.record.train_log[0]
    plain = obtain(tiny(**TWO_EPOCHS, processes=1), progress=False)
    torch.testing.assert_close(weights_at(sharded, 2), weights_at(plain, 2))
    moments = [load_file(str(Path(run.path) / "checkpoint-2" / "optimizer.safetensors")) for run in (sharded, plain)]
    torch.testing.assert_close(*moments)
    assert [e.mean_margin for e in sharded.record.evaluations] == pytest.approx(
        [e.mean_margin for e in plain.record.evaluations], abs=1e-5)


def test_a_sharded_run_without_its_last_checkpoint_replays_on_every_rank_to_the_unsharded_result():
    """No checkpoint is gathered at a request's last epoch, and a replayed epoch is probed by no rank: both are
    collective under FSDP2, so every rank must decide alike (a rank probing alone would hang the group)."""
    sharded = dict(TWO_EPOCHS, processes=2, offload="fsdp2")
    first = obtain(tiny(**sharded | {"epochs": 1}, resumable=False), progress=False)
    assert first.record.checkpoint is None and not list(Path(first.path).glob("checkpoint-*"))
    replayed = obtain(tiny(**sharded), progress=False)
    assert replayed.record.train_log[0] == first.record.train_log[0]  # the record's epoch 1, kept
    assert replayed.record.evaluations[1] == first.record.evaluations[1]
    plain = obtain(tiny(**TWO_EPOCHS, processes=1), progress=False)
    torch.testing.assert_close(weights_at(replayed, 2), weights_at(plain, 2))


@pytest.mark.parametrize("fields, words", [
    (dict(method=LoRA()), r"only full fine-tuning is sharded here"),
    (dict(precision="fp16"), r"use one of \['fp32', 'bf16-autocast'\]"),
    (dict(offload="streaming", processes=1), r"offload='streaming' is planned .* but not trained: train with host "
                                             r"offload as offload='fsdp2'"),
])
def test_what_the_sharding_cannot_wrap_is_refused_before_any_process_starts(fields, words, monkeypatch):
    monkeypatch.setattr(obtain_module, "train_in_ranks", lambda *a, **k: pytest.fail("a process was started"))
    with pytest.raises(ConfigError, match=words):
        obtain(tiny(**TWO_EPOCHS, **({"offload": "fsdp2", "processes": 2} | fields)), progress=False)


STARTS_RANKS = """
import sys
from pathlib import Path
from trainer.runs import ranks
from trainer.training.placement import placed
from tiny import tiny

exp = placed(tiny(epochs=2, batch_size=4, device="cpu", processes=2))
ranks.train_in_ranks(exp, Path(sys.argv[1]), key="k", components={}, baseline_path=Path(sys.argv[1]) / "b.json",
                     progress=False, entry=sys.argv[2])
"""


def test_the_ranks_stop_when_the_process_that_started_them_is_killed(tmp_path):
    """A killed pytest or Ray worker takes its torchrun and ranks with it: none trains on beside a retry."""
    import os
    import signal
    import subprocess
    import sys
    import time

    started = tmp_path / "ranks"
    started.mkdir()
    env = os.environ | {"SLEEPING_RANKS": str(started), "PYTHONPATH": str(Path(__file__).parent)}
    parent = subprocess.Popen([sys.executable, "-c", STARTS_RANKS, str(tmp_path / "run"),
                               str(Path(__file__).with_name("sleeping_rank.py"))], env=env)
    try:
        deadline = time.monotonic() + 60
        while len(list(started.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        rank_pids = [int(path.name) for path in started.iterdir()]
        assert len(rank_pids) == 2, "torchrun did not start two ranks within a minute"
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in rank_pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in rank_pids if _alive(pid)], "ranks trained on after their parent was killed"
    finally:
        parent.kill()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"  # a zombie has stopped; only its parent has not reaped it
    except FileNotFoundError:
        return False
