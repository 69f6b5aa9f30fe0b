"""Framework tests run against a private, empty cache and tiny random models (milliseconds per step)."""

import pytest

from trainer.models.sources import REGISTRY

pytest_plugins = ["pytester"]

# pytester's in-process runs drop modules first imported inside them, and torch cannot register its
# operators twice; importing the tiny models' code (and generation) once here keeps it loaded.
for _name in ("tiny-llama", "tiny-qwen2", "tiny-phi"):
    _loaded = REGISTRY[_name].load()
    _loaded.model.generate(**_loaded.tokenizer(["x"], return_tensors="pt"), max_new_tokens=1, do_sample=False)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Each test gets its own empty cache; nothing touches the user's ~/.cache."""
    root = tmp_path / "ft-cache"
    monkeypatch.setenv("FT_CACHE_DIR", str(root))
    monkeypatch.delenv("FT_MODEL_DIR", raising=False)
    monkeypatch.setenv("FT_PARALLEL_RUNS", "1")  # in-process, so monkeypatch and capsys see training; see test_parallel
    return root
