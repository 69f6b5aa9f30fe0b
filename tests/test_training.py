"""Training, resume and cache behaviour on tiny models (seconds)."""

import json

import pytest
from safetensors.torch import load_file
from tiny import TINY

from trainer import ConfigError, Experiment, settings
from trainer.cache import store
from trainer.runs.obtain import obtain, obtain_with_control


def weights_of(run):
    return load_file(f"{run.path}/{run.record.checkpoint}/model.safetensors")


def test_training_lowers_the_loss_and_records_every_evaluated_epoch():
    run = obtain(Experiment(epochs=3, **TINY), progress=False)
    losses = [entry.loss for entry in run.train_log]
    assert losses[-1] < losses[0], losses
    assert run.evaluated_epochs == [0, 1, 2, 3]
    assert run.baseline.differ_from_baseline == 0


def test_same_seed_gives_identical_weights(tmp_path, monkeypatch):
    first = weights_of(obtain(Experiment(epochs=2, **TINY), progress=False))
    monkeypatch.setenv("FT_CACHE_DIR", str(tmp_path / "other-cache"))
    second = weights_of(obtain(Experiment(epochs=2, **TINY), progress=False))
    assert all((first[k] == second[k]).all() for k in first)


def test_resume_continues_and_matches_an_uninterrupted_run(tmp_path, monkeypatch, capsys):
    obtain(Experiment(epochs=2, **TINY), progress=False)
    resumed = obtain(Experiment(epochs=4, **TINY), progress=False)
    assert "resuming tiny-llama from cached epoch 2" in capsys.readouterr().err
    assert [e.epoch for e in resumed.train_log] == [1, 2, 3, 4]
    monkeypatch.setenv("FT_CACHE_DIR", str(tmp_path / "fresh"))
    straight = obtain(Experiment(epochs=4, **TINY), progress=False)
    a, b = weights_of(resumed), weights_of(straight)
    assert all((a[k] == b[k]).all() for k in a), "resumed parameters differ from an uninterrupted run"
    assert resumed.evaluation(4).margins == straight.evaluation(4).margins


def test_warm_request_loads_no_model(monkeypatch):
    exp = Experiment(epochs=2, **TINY)
    obtain_with_control(exp, progress=False)
    from trainer.models.sources import TinyRandom

    def refuse(self):
        raise AssertionError("a cached request must not load a model")

    monkeypatch.setattr(TinyRandom, "load", refuse)
    run = obtain_with_control(exp.with_epochs(1), progress=False)
    assert run.from_cache and run.control.from_cache and run.evaluated_epochs == [0, 1]


def test_corrupt_record_is_detected_quarantined_and_recomputed(capsys):
    exp = Experiment(epochs=1, **TINY)
    run = obtain(exp, progress=False)
    record = store.run_dir(run.key) / store.RECORD
    text = record.read_text()
    record.write_text(text.replace('"epochs_done": 1', '"epochs_done": 9'))
    again = obtain(exp, progress=False)
    assert "does not match its checksum" in capsys.readouterr().err
    assert not again.from_cache and again.record.epochs_done == 1
    assert record.with_name("record.json.corrupt").exists()


def test_cache_root_is_marked_as_a_cache(private_cache):
    obtain(Experiment(epochs=1, **TINY), progress=False)
    assert (private_cache / "CACHEDIR.TAG").read_text().startswith("Signature: 8a477f597d28d172789f06886806bc55")
    assert (private_cache / ".gitignore").read_text() == "*\n"


def test_key_components_are_logged_in_the_record():
    run = obtain(Experiment(epochs=1, **TINY), progress=False)
    parts = run.record.key_components
    assert set(parts) >= {"experiment", "model_fingerprint", "behavior_sha256", "code_version", "torch"}
    json.dumps(parts)


@pytest.mark.parametrize("change", [dict(lr=2e-3), dict(seed=1), dict(clip=None), dict(data="control")])
def test_outcome_changing_fields_change_the_key(change):
    from trainer.runs.keys import experiment_key

    assert experiment_key(Experiment(epochs=1, **TINY)) != experiment_key(Experiment(epochs=1, **(TINY | change)))


def test_run_and_control_share_one_cached_baseline(private_cache):
    run = obtain_with_control(Experiment(epochs=1, **TINY), progress=False)
    assert len(list((private_cache / "baselines").glob("*.json"))) == 1
    assert run.baseline.margins == run.control.baseline.margins
    assert run.baseline.generations == run.control.baseline.generations


def test_cache_cap_drops_the_oldest_checkpoints_but_keeps_records_and_answers(monkeypatch, capsys):
    from trainer.cache import retention

    first = obtain(Experiment(epochs=1, **TINY), progress=False)
    size = retention.size_of(next(retention.checkpoints()[0].parent.glob("checkpoint-*")))
    monkeypatch.setenv(settings.CACHE_MAX_GB_ENV, str(1.5 * size / 1e9))  # room for one checkpoint
    obtain(Experiment(epochs=1, **{**TINY, "seed": 1}), progress=False)
    assert "dropped the resumable checkpoint" in capsys.readouterr().err
    assert len(retention.checkpoints()) == 1
    again = obtain(Experiment(epochs=1, **TINY), progress=False)
    assert again.from_cache and again.record.checkpoint is None, "the record still answers, without a checkpoint"
    longer = obtain(Experiment(epochs=2, **TINY), progress=False)  # must retrain from epoch 0, same numbers
    assert longer.evaluation(1).margins == first.evaluation(1).margins
    assert [e.epoch for e in longer.train_log] == [1, 2]


def test_bad_cache_cap_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(settings.CACHE_MAX_GB_ENV, "lots")
    with pytest.raises(ValueError, match=r"FT_CACHE_MAX_GB='lots': must be a number of GB"):
        settings.active().cache_limit_bytes()


def test_cache_sizing_tolerates_files_removed_by_a_parallel_run(tmp_path):
    from trainer.cache import retention

    folder = tmp_path / "checkpoint-2"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"x" * 10)
    assert retention.size_of(folder) == 10
    (folder / "model.safetensors").unlink()
    folder.rmdir()
    assert retention.size_of(folder) == 0


@pytest.mark.parametrize("fields", [{"optimizer": "sgd", "lr": 0.5}, {"optimizer": "adafactor"},
                                    {"checkpointing": True}])
def test_the_planner_s_optimizers_and_recomputation_train_and_resume_exactly(fields):
    """Every trainable memory field of an Experiment trains through the one optimizer factory, and resumes."""
    straight = obtain(Experiment(epochs=2, **{**TINY, **fields}), progress=False)
    assert straight.train_log[-1].loss < straight.train_log[0].loss
    again = obtain(Experiment(epochs=1, **{**TINY, **fields, "seed": 4}), progress=False)
    resumed = obtain(Experiment(epochs=2, **{**TINY, **fields, "seed": 4}), progress=False)
    assert [e.epoch for e in resumed.train_log] == [1, 2] and again.record.key == resumed.record.key


def test_recomputation_changes_memory_not_numbers():
    plain = obtain(Experiment(epochs=1, **TINY), progress=False)
    recomputed = obtain(Experiment(epochs=1, checkpointing=True, **TINY), progress=False)
    assert recomputed.record.key != plain.record.key
    assert recomputed.evaluation(1).margins == pytest.approx(plain.evaluation(1).margins, abs=1e-5)


@pytest.mark.parametrize("fields, words", [({"offload": "streaming"}, "can be planned .* but not trained yet"),
                                           ({"optimizer": "adamw-8bit"}, "needs bitsandbytes")])
def test_a_recipe_that_can_be_planned_but_not_trained_here_says_so(fields, words):
    with pytest.raises(ConfigError, match=words):
        obtain(Experiment(epochs=1, **TINY, **fields), progress=False)
