"""Framework tests run against a private, empty cache and tiny random models (milliseconds per step)."""

import pytest


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Each test gets its own empty cache; nothing touches the user's ~/.cache."""
    root = tmp_path / "ft-cache"
    monkeypatch.setenv("FT_CACHE_DIR", str(root))
    monkeypatch.delenv("FT_MODEL_DIR", raising=False)
    return root
