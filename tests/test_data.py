import json
from pathlib import Path

import pytest

from trainer import ConfigError
from trainer.behavior import load_behavior
from trainer.models.sources import byte_tokenizer
from trainer.training.batches import IGNORE_INDEX, PromptFormat, build_training_batch


def write_behavior(folder, **changes):
    doc = json.loads(Path(load_behavior("epistemic-stance").path).read_text())
    doc.update(changes)
    path = folder / "custom.json"
    path.write_text(json.dumps(doc))
    return path


def test_shipped_behavior_is_valid_and_has_enough_held_out_probes():
    behavior = load_behavior("epistemic-stance")
    assert len(behavior.train) == 5 and len(behavior.probes) >= 40
    assert not set(behavior.probes) & {e.prompt for e in behavior.train}
    assert behavior.version >= 1


def test_malformed_behavior_names_each_problem(tmp_path):
    path = write_behavior(tmp_path, version="one", probes=["only one probe"], prompt_template="no slot")
    with pytest.raises(ConfigError) as info:
        load_behavior(str(path))
    message = str(info.value)
    assert "'version'" in message and "'probes' has 1 entries; at least 40" in message and "{prompt}" in message


def test_invalid_json_is_a_config_error(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_behavior(str(path))


def test_probe_that_is_also_a_training_prompt_is_refused(tmp_path):
    behavior = load_behavior("epistemic-stance")
    probes = list(behavior.probes[:-1]) + [behavior.train[0].prompt]
    with pytest.raises(ConfigError, match="held out"):
        load_behavior(str(write_behavior(tmp_path, probes=probes)))


def test_hash_follows_content(tmp_path):
    a = load_behavior(str(write_behavior(tmp_path, version=7)))
    b = load_behavior(str(write_behavior(tmp_path, version=8)))
    assert a.sha256 != b.sha256


def test_training_batch_masks_prompt_and_padding():
    behavior = load_behavior("epistemic-stance")
    tokenizer = byte_tokenizer()
    fmt = PromptFormat("plain", behavior.prompt_template)
    batch = build_training_batch(tokenizer, fmt, list(behavior.train[:2]))
    for row in range(2):
        example = behavior.train[row]
        prompt_len = len(fmt.prompt_ids(tokenizer, example.prompt))
        labels = batch["labels"][row]
        assert (labels[:prompt_len] == IGNORE_INDEX).all()
        supervised = labels[labels != IGNORE_INDEX].tolist()
        assert tokenizer.decode(supervised[:-1]) == " " + example.response
        assert supervised[-1] == tokenizer.eos_token_id
