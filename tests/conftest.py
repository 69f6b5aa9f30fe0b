"""Framework tests run against a private, empty cache and tiny random models (milliseconds per step)."""

import pytest
from tiny import load_tiny_models_once  # tests/ is on sys.path (pytest's prepend import mode)

pytest_plugins = ["pytester"]

load_tiny_models_once()


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Each test gets its own empty cache; nothing touches the user's ~/.cache."""
    root = tmp_path / "ft-cache"
    monkeypatch.setenv("FT_CACHE_DIR", str(root))
    monkeypatch.delenv("FT_MODEL_DIR", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # a login node's cluster is not for the framework's tests
    monkeypatch.setenv("FT_PARALLEL_RUNS", "1")  # in-process, so monkeypatch and capsys see training; see test_parallel
    return root
