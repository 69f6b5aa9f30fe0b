"""The repository's shape that pytest relies on."""

from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_test_modules_have_unique_basenames_across_tests_and_behaviors():
    # Without __init__.py files pytest imports test modules by basename: a duplicate breaks collection.
    names = Counter(p.name for folder in ("tests", "behaviors") for p in (ROOT / folder).glob("test_*.py"))
    assert [name for name, count in names.items() if count > 1] == []
