"""A claim's verdict as the library computes it: whether it holds, and why, in measured words.

Every rule that decides a finding lives in `trainer` and returns a `Judgement`; the pytest layer only
asserts `holds` and shows `explanation` (the measured values, the threshold they were held to, and
what to try), so the numbers a test is judged by are never re-stated outside the library.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Judgement:
    holds: bool
    explanation: str  # measured values against their thresholds; for a failure, what to try


def judged(holds: bool, explanation: str) -> Judgement:
    return Judgement(bool(holds), explanation)
