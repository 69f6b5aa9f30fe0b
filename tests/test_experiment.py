import pytest

from trainer import ConfigError, Experiment


def test_every_bad_field_is_reported_at_once_with_its_value():
    with pytest.raises(ConfigError) as info:
        Experiment(model="tiny-llama", epochs=0, lr=-1.0, eval_every=0, batch_size=0)
    message = str(info.value)
    for expected in ("epochs=0", "lr=-1.0", "eval_every=0", "batch_size=0", "4 problem(s)"):
        assert expected in message, message


def test_unknown_model_lists_known_names():
    with pytest.raises(ConfigError) as info:
        Experiment(model="gpt-17")
    assert "'gpt-17'" in str(info.value) and "smollm2-135m" in str(info.value) and "phi-2" in str(info.value)


def test_unknown_behavior_lists_known_behaviors():
    with pytest.raises(ConfigError) as info:
        Experiment(model="tiny-llama", behavior="sarcasm")
    assert "'sarcasm'" in str(info.value) and "epistemic-stance" in str(info.value)


def test_epochs_are_not_part_of_the_key_so_longer_runs_resume():
    short, long = Experiment(model="tiny-llama", epochs=2), Experiment(model="tiny-llama", epochs=20)
    assert short.key_fields() == long.key_fields()
    assert Experiment(model="tiny-llama", lr=2e-5).key_fields() != short.key_fields()


def test_evaluated_epochs_start_at_baseline_and_include_the_last():
    assert Experiment(model="tiny-llama", epochs=5, eval_every=2).evaluated_epochs() == [0, 2, 4, 5]
    assert Experiment(model="tiny-llama", epochs=4, eval_every=2).evaluated_epochs() == [0, 2, 4]


def test_control_differs_only_in_its_data():
    exp = Experiment(model="tiny-llama", lr=3e-4)
    control = exp.control()
    assert control.data == "control" and control.lr == exp.lr and control.model == exp.model


def test_bad_input_touches_no_cache(private_cache):
    with pytest.raises(ConfigError):
        Experiment(model="tiny-llama", epochs=-3)
    with pytest.raises(ConfigError):
        Experiment(model="not-a-model")
    assert not private_cache.exists()
