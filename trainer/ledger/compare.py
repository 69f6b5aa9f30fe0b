"""Which figures of a finding moved against its baseline, judged by each figure's own rule, and the move in words.

Rules (the baseline's figure carries its rule and interval, so what counts as moved is what was
committed, not what the code says today):
- exact: any change. Onsets are evaluated epochs, so an onset that changes moved by at least one look.
- interval: the new value lies outside the baseline's 95% interval (one-sided where one bound is unknown).
- relative: the new value is off the baseline by more than its share (2% for planned bytes).
- noted: recorded for the reader (timings, fits, p-values); never a move.
A figure the baseline has and this run no longer measures is a move, unless its model is not on this
machine ("not measured" in the entry): not measured is not moved. A figure the baseline lacks is new,
not moved. The verdict is compared only when both entries measured the same models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from trainer.ledger.figures import BYTES, EPOCH, EXACT, INTERVAL, NOTED, RELATIVE, format_value

VERDICT = "verdict"
NOT_MEASURED = "not measured"


@dataclass(frozen=True)
class Move:
    name: str
    old: object
    new: object
    unit: str
    why: str  # the rule it broke, with the baseline's figures

    def words(self) -> str:
        """"onset epoch 2 -> 4" or "seed 0 gain at the deciding look +0.30 -> +0.12 nats/token"."""
        unit = f" {self.unit}" if self.unit not in ("", EPOCH, BYTES) else ""  # bytes print their own unit
        old, new = format_value(self.old, self.unit), format_value(self.new, self.unit)
        if old == new:  # moved, yet equal at the usual precision: show the digits that differ
            old, new = format_value(self.old, self.unit, digits=6), format_value(self.new, self.unit, digits=6)
        return f"{self.name} {old} -> {new}{unit}"

    @property
    def is_verdict(self) -> bool:
        return self.name == VERDICT


def moves(baseline: dict, now: dict) -> list[Move]:
    """The figures of `now` that moved against `baseline` (both as stored: {"figures": {name: figure}})."""
    found = []
    measured, absent = now.get("figures", {}), now.get(NOT_MEASURED, [])
    same_models = sorted(baseline.get(NOT_MEASURED, [])) == sorted(absent)
    for name, old in baseline.get("figures", {}).items():
        if name == VERDICT and not same_models:
            continue  # a verdict over other models is another question, not a move
        new = measured.get(name)
        if new is None:
            if not any(name.startswith(f"{model} ") for model in absent):
                found.append(Move(name, old["value"], None, old.get("unit", ""), "no longer measured"))
            continue
        why = broken_rule(old, new["value"])
        if why:
            found.append(Move(name, old["value"], new["value"], old.get("unit", ""), why))
    return found


def differs(baseline: dict, now: dict) -> bool:
    """Anything an update would change: a move, a new figure, another subject or other models measured."""
    return bool(moves(baseline, now)) or baseline.get("subject") != now.get("subject") \
        or sorted(baseline.get(NOT_MEASURED, [])) != sorted(now.get(NOT_MEASURED, [])) \
        or bool(set(now.get("figures", {})) - set(baseline.get("figures", {})))


def broken_rule(old: dict, value: object) -> str | None:
    """Why `value` is a move against the baseline figure `old`, or None when it is the same measurement."""
    rule, before = old["rule"], old["value"]
    if rule == NOTED:
        return None
    if rule == EXACT or not _number(value) or not _number(before):
        return None if value == before else "changed"
    if rule == INTERVAL:
        return _outside(old, value)
    if rule == RELATIVE:
        share = old["tolerance"]
        return f"off the baseline by more than {share:.0%}" if abs(value - before) > share * abs(before) else None
    raise ValueError(f"ledger rule {rule!r}: must be one of {EXACT}, {INTERVAL}, {RELATIVE}, {NOTED}")


def _outside(old: dict, value: float) -> str | None:
    """Outside the interval; a bound that is unknown (None) leaves that side open; no bound at all: exact."""
    low, high, unit = old.get("low"), old.get("high"), old.get("unit", "")
    if not _number(low) and not _number(high):
        return None if value == old["value"] else "changed (the baseline has no interval)"
    below = _number(low) and value < low
    above = _number(high) and value > high
    if below or above:
        return f"outside the baseline's 95% interval {format_value(low, unit)} .. {format_value(high, unit)}"
    return None


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
