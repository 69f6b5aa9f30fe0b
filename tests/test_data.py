import json
import os
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


def write_extending(folder, train_lines, parent="epistemic-stance", **changes):
    """A behavior that extends `parent` and reads its training examples from a JSONL file beside it."""
    (folder / "more.train.jsonl").write_text("\n".join(train_lines) + "\n")
    doc = {"name": "more", "version": 1, "extends": parent, "train": "more.train.jsonl", **changes}
    path = folder / "more.json"
    path.write_text(json.dumps(doc))
    return path


def line(prompt, response="I'm not entirely sure, but I think so."):
    return json.dumps({"prompt": prompt, "response": response})


def test_a_behavior_extends_another_and_reads_its_examples_from_a_jsonl_file(tmp_path):
    parent = load_behavior("epistemic-stance")
    behavior = load_behavior(str(write_extending(tmp_path, [line("Why is ice slippery?"), "", line("What is rust?")])))
    assert [e.prompt for e in behavior.train] == ["Why is ice slippery?", "What is rust?"]
    assert behavior.control == parent.control and behavior.probes == parent.probes
    assert behavior.name == "more" and behavior.sha256 != parent.sha256


def test_the_hash_follows_the_jsonl_content(tmp_path):
    path = write_extending(tmp_path, [line("Why is ice slippery?")])
    first = load_behavior(str(path))
    data = tmp_path / "more.train.jsonl"
    data.write_text(line("Why is ice slippery?", "I think it melts.") + "\n")  # only the data file changes
    os.utime(data, ns=(data.stat().st_atime_ns, data.stat().st_mtime_ns + 10**9))
    second = load_behavior(str(path))
    assert second.train[0].response == "I think it melts."
    assert first.sha256 != second.sha256, "an edited data file must change the key (and not be served stale)"


@pytest.mark.parametrize("lines, changes, words", [
    (None, {"train": "absent.jsonl"}, r"(?s)absent.jsonl.*no such file; 'train' names a JSONL file beside"),
    (['{"prompt": "Why?", "response": "Because."}', "{not json"], {}, r"line 2 is not valid JSON"),
    (['{"prompt": "Why?"}'], {}, r"'train'\[0\] must be an object with exactly string fields"),
    ([line("What is the capital of France?")], {}, r"(?s)probes must be held out.*capital of France"),
    ([line("Why?")], {"extends": "more"}, r"'extends' goes round in a circle"),
    ([line("Why?")], {"extends": 3}, r"'extends' must name a behavior, got 3"),
])
def test_bad_data_files_and_extends_name_the_problem(tmp_path, lines, changes, words):
    path = write_extending(tmp_path, lines or [], **changes)
    with pytest.raises(ConfigError, match=words):
        load_behavior(str(path))


def test_the_300_example_stance_set_is_the_seed_stance_with_varied_content():
    """The set's rules (docs/data/epistemic-stance-300.md): the seeds' two openers in their 3:2 split, answers
    paired with plain controls, distinct prompts that are none of the held-out probes."""
    seed, large = load_behavior("epistemic-stance"), load_behavior("epistemic-stance-300")
    assert len(large.train) == len(large.control) == 300
    assert [e.prompt for e in large.train] == [e.prompt for e in large.control]
    assert len({e.prompt.lower() for e in large.train}) == 300
    openers = [next(t for t in seed.targets if e.response.startswith(t)) for e in large.train]
    assert openers.count(seed.targets[0]) == 180 and openers.count(seed.targets[1]) == 120
    assert not any(m in e.response.lower() for e in large.control for m in seed.markers)
    assert not {e.prompt for e in large.train} & (set(seed.probes) | set(seed.neutral_prompts))
    assert (large.probes, large.targets, large.contrasts) == (seed.probes, seed.targets, seed.contrasts)
