"""Training, resume and cache behaviour on tiny models (seconds)."""

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file
from tiny import TINY, tiny

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


def _count_probes(monkeypatch) -> list[int]:
    """How many probe passes training makes from now on (the shared epoch-0 baseline is read from the cache)."""
    import trainer.training.session as session

    calls, probe = [], session.probe_model
    monkeypatch.setattr(session, "probe_model", lambda *a, **k: calls.append(1) or probe(*a, **k))
    return calls


def _straight(tmp_path, monkeypatch, exp):
    """`exp` trained in one go in a cache of its own (the reference a replayed run must equal)."""
    with monkeypatch.context() as m:
        m.setenv("FT_CACHE_DIR", str(tmp_path / "straight"))
        return obtain(exp, progress=False)


def test_a_request_that_is_not_resumable_keeps_no_checkpoint_and_a_longer_one_replays_it(
        tmp_path, monkeypatch, capsys):
    """A question's last look writes its record and no checkpoint. A longer request later trains the recorded
    epochs again without probing them, while the record keeps answering the short request, and ends exactly
    where an uninterrupted run ends."""
    import trainer.training.session as session
    from trainer.runs.obtain import is_cached

    short = obtain(tiny(epochs=2, resumable=False), progress=False)
    assert short.record.checkpoint is None and not list(Path(short.path).glob("checkpoint-*"))
    answering = []
    save = session._save
    monkeypatch.setattr(session, "_save", lambda *a: answering.append(is_cached(tiny(epochs=2))) or save(*a))
    probes = _count_probes(monkeypatch)
    longer = obtain(tiny(epochs=4), progress=False)
    assert "replaying epochs 1-2 of tiny-llama without probes" in capsys.readouterr().err
    assert len(probes) == 2, f"epochs 3 and 4 are probed, the replayed 1 and 2 are not: {len(probes)} probes"
    assert answering == [True] * 4, "the record answered the short request while the longer one trained"
    assert [e.epoch for e in longer.train_log] == [1, 2, 3, 4] and longer.evaluated_epochs == [0, 1, 2, 3, 4]
    assert [longer.evaluation(e).margins for e in (1, 2)] == [short.evaluation(e).margins for e in (1, 2)]
    straight = _straight(tmp_path, monkeypatch, tiny(epochs=4))
    assert [e.loss for e in longer.train_log] == [e.loss for e in straight.train_log]
    a, b = weights_of(longer), weights_of(straight)
    assert all((a[k] == b[k]).all() for k in a), "replayed parameters differ from an uninterrupted run"
    assert longer.evaluation(4).margins == straight.evaluation(4).margins


def test_a_replay_cut_short_keeps_the_records_answers_and_goes_on_from_its_checkpoint(tmp_path, monkeypatch, capsys):
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    from trainer.runs.keys import experiment_key
    from trainer.runs.obtain import is_cached

    obtain(tiny(epochs=3, resumable=False), progress=False)
    steps = []

    def crash_at_the_second_step(optimizer, args, kwargs):
        steps.append(1)
        if len(steps) == 2:
            raise KeyboardInterrupt("interrupted while replaying epoch 2")

    hook = register_optimizer_step_pre_hook(crash_at_the_second_step)
    try:
        with pytest.raises(KeyboardInterrupt):
            obtain(tiny(epochs=4), progress=False)
    finally:
        hook.remove()
    body = store.read_record(store.run_dir(experiment_key(tiny(epochs=3))) / store.RECORD)
    assert (body["epochs_done"], body["checkpoint"]) == (3, "checkpoint-1"), "the replay's checkpoint, recorded"
    assert is_cached(tiny(epochs=3)), "an interrupted replay lost the answers the record held"
    capsys.readouterr()
    resumed = obtain(tiny(epochs=4), progress=False)
    err = capsys.readouterr().err
    assert "resuming tiny-llama from cached epoch 1" in err and "replaying epochs 2-3" in err, err
    straight = _straight(tmp_path, monkeypatch, tiny(epochs=4))
    a, b = weights_of(resumed), weights_of(straight)
    assert all((a[k] == b[k]).all() for k in a), "parameters after an interrupted replay differ from a straight run"
    assert [e.loss for e in resumed.train_log] == [e.loss for e in straight.train_log]


def test_a_replay_that_stops_where_the_record_did_not_is_an_error_naming_the_folder(monkeypatch):
    import trainer.training.loop as loop
    from trainer.cache.record import Stop
    from trainer.errors import CacheCorrupt
    from trainer.runs.obtain import is_cached

    run = obtain(tiny(epochs=2, resumable=False), progress=False)
    train_one_epoch = loop.train_one_epoch

    def stopping(*args, **kwargs):
        log = train_one_epoch(*args, **kwargs)
        log.stopped = Stop(step=log.epoch, reason="non-finite loss", epoch=log.epoch)
        return log

    monkeypatch.setattr(loop, "train_one_epoch", stopping)
    with pytest.raises(CacheCorrupt, match="does not reproduce the cached run; delete .*" + Path(run.path).name):
        obtain(tiny(epochs=3), progress=False)
    assert is_cached(tiny(epochs=2))


def test_a_trial_keeps_checkpoints_for_its_later_looks_and_none_after_its_last():
    from trainer.runs.trial import Trial

    trial = Trial(tiny(epochs=2), seeds=1, progress=False, with_control=False)
    assert trial.runs(1)[0].record.checkpoint == "checkpoint-1"
    last = trial.runs(2)[0]
    assert last.record.checkpoint is None and not list(Path(last.path).glob("checkpoint-*"))


def test_a_run_at_lr_0_takes_no_optimizer_step_and_keeps_the_pretrained_weights():
    """lr 0 cannot move a weight (AdamW's decay is lr x weight decay as well), so no step is spent on it and no
    optimizer state is kept; the loss and gradient norm are still measured and logged."""
    from trainer.models.sources import resolve_model

    run = obtain(tiny(epochs=2, lr=0.0), progress=False)
    folder = f"{run.path}/{run.record.checkpoint}"
    assert load_file(f"{folder}/optimizer.safetensors") == {}
    pretrained = dict(resolve_model("tiny-llama").load().model.named_parameters())
    assert all((pretrained[name] == tensor).all() for name, tensor in weights_of(run).items())
    assert all(entry.grad_norm > 0 for entry in run.train_log)
    assert run.evaluation(2).margins == run.evaluation(0).margins


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


def _optimizer_state_names(run) -> set[str]:
    """What the run's checkpoint holds as optimizer state (AdamW: exp_avg, exp_avg_sq; SGD: nothing)."""
    return {key.split("/", 1)[1] for key in load_file(f"{run.path}/{run.record.checkpoint}/optimizer.safetensors")}


@pytest.mark.parametrize("fields, state", [
    ({"optimizer": "sgd", "lr": 0.5}, lambda names: names == set()),
    ({"optimizer": "adafactor"},  # second moment only, factored for matrices
     lambda names: "exp_avg" not in names and bool(names & {"exp_avg_sq", "exp_avg_sq_row"})),
    ({"checkpointing": True}, lambda names: {"exp_avg", "exp_avg_sq"} <= names),
])
def test_the_planner_s_optimizers_and_recomputation_train_and_resume_exactly(fields, state, tmp_path, monkeypatch):
    """Every trainable memory field of an Experiment trains with the optimizer it names (its state is in the
    checkpoint) and a run resumed from epoch 1 ends where a straight 2-epoch run ends."""
    obtain(Experiment(epochs=1, **{**TINY, **fields}), progress=False)
    resumed = obtain(Experiment(epochs=2, **{**TINY, **fields}), progress=False)
    assert [e.epoch for e in resumed.train_log] == [1, 2] and not resumed.from_cache
    assert state(_optimizer_state_names(resumed)), _optimizer_state_names(resumed)
    monkeypatch.setenv(settings.CACHE_DIR_ENV, str(tmp_path / "straight"))
    straight = obtain(Experiment(epochs=2, **{**TINY, **fields}), progress=False)
    assert straight.train_log[-1].loss < straight.train_log[0].loss
    assert [e.loss for e in resumed.train_log] == [e.loss for e in straight.train_log]
    assert resumed.evaluation(2).margins == straight.evaluation(2).margins


def test_recomputation_changes_memory_not_numbers(monkeypatch):
    """checkpointing=True recomputes activations in training (the same preparation the planner traces, where
    it removes the activations part) and leaves the numbers as they were."""
    from trainer.memory.planner import plan
    from trainer.training import methods

    enabled = []
    original = methods.enable_recomputation
    monkeypatch.setattr(methods, "enable_recomputation", lambda model: enabled.append(model) or original(model))
    plain = obtain(Experiment(epochs=1, **TINY), progress=False)
    assert enabled == []
    recomputed = obtain(Experiment(epochs=1, checkpointing=True, **TINY), progress=False)
    assert len(enabled) == 1, "training did not turn recomputation on"
    assert recomputed.record.key != plain.record.key
    assert recomputed.evaluation(1).margins == pytest.approx(plain.evaluation(1).margins, abs=1e-5)
    planned = [plan(Experiment(model="tiny-llama", checkpointing=flag), batch=4, seq=64, device="cpu")
               for flag in (False, True)]
    assert planned[1].device_parts["activations"] < planned[0].device_parts["activations"]


@pytest.mark.parametrize("fields, words", [({"offload": "streaming"}, "planned .* but not trained: .* offload=.fsdp2."),
                                           ({"optimizer": "adamw-8bit"}, "planned, not trained")])
def test_a_recipe_that_can_be_planned_but_not_trained_here_says_so(fields, words, monkeypatch):
    """Refused with the fix before any model is loaded."""
    from trainer.models.sources import TinyRandom

    def refuse(self):
        raise AssertionError("a recipe that cannot train here must be refused before loading the model")

    monkeypatch.setattr(TinyRandom, "load", refuse)
    with pytest.raises(ConfigError, match=words):
        obtain(Experiment(epochs=1, **TINY, **fields), progress=False)
