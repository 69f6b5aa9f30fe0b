"""Errors a user can act on: each names the bad value, the limit, and the fix."""

from __future__ import annotations


class SuiteError(Exception):
    """Base class for every error this library raises on purpose."""


class ConfigError(SuiteError, ValueError):
    """Invalid experiment, behavior file or option; lists every problem at once."""

    def __init__(self, subject: str, problems: list[str]):
        self.subject = subject
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{subject} is invalid ({len(self.problems)} problem(s)):\n{lines}")

    def __reduce__(self):  # rebuilt from its fields when it crosses from a worker process
        return type(self), (self.subject, self.problems)


class UnknownModelError(SuiteError, KeyError):
    """A model name that is neither registered nor a folder on disk."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class WeightsMissing(SuiteError):
    """A registered model whose weights are not on this machine (tests skip, naming the fix)."""


class LibraryMissing(SuiteError):
    """An optional library a recipe needs (bitsandbytes for a quantized base) is not installed (tests skip,
    naming how to install it)."""


class UnsafeWeightsError(SuiteError):
    """A model folder that offers only pickle-based weights, which this suite refuses to load."""


class CacheCorrupt(SuiteError):
    """A cached record or checkpoint whose checksum does not match; it is recomputed, never used."""


class CacheWriteError(SuiteError, OSError):
    """The cache cannot be written (disk full, read-only, not a folder): names the path, the bytes and the fix."""


class ExpectationMisuse(SuiteError, ValueError):
    """An expectation asked of a run that cannot answer it (an epoch it never trained, an unknown metric)."""
