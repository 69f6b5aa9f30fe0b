"""Which figures of a finding moved against its baseline, judged by each figure's own rule, and the move in words.

Rules (the baseline's figure carries its rule and interval, so what counts as moved is what was
committed, not what the code says today):
- exact: any change. Onsets are evaluated epochs, so an onset that changes moved by at least one look.
- interval: the new value lies outside the baseline's 95% interval.
- relative: the new value is off the baseline by more than its share (2% for planned bytes).
- noted: recorded for the reader (timings, fits, p-values); never a move.
A figure the baseline has and this run did not measure (a model absent here) is not a move.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from trainer.ledger.figures import BYTES, EPOCH, EXACT, INTERVAL, NOTED, RELATIVE, format_value


@dataclass(frozen=True)
class Move:
    name: str
    old: object
    new: object
    unit: str
    why: str  # the rule it broke, with the baseline's figures

    def words(self) -> str:
        """"onset epoch 2 -> 4" or "seed 0 gain at epoch 2 +0.30 -> +0.12 nats/token"."""
        unit = f" {self.unit}" if self.unit not in ("", EPOCH, BYTES) else ""  # bytes print their own unit
        return f"{self.name} {format_value(self.old, self.unit)} -> {format_value(self.new, self.unit)}{unit}"


def moves(baseline: dict, now: dict) -> list[Move]:
    """The figures of `now` that moved against `baseline` (both as stored: {"figures": {name: figure}})."""
    found = []
    measured = now.get("figures", {})
    for name, old in baseline.get("figures", {}).items():
        new = measured.get(name)
        if new is None:
            continue  # not measured here is not moved
        why = _broken_rule(old, new["value"])
        if why:
            found.append(Move(name, old["value"], new["value"], old.get("unit", ""), why))
    return found


def _broken_rule(old: dict, value: object) -> str | None:
    rule, before = old["rule"], old["value"]
    if rule == NOTED:
        return None
    if rule == EXACT or not _numbers(before, value):
        return None if value == before else "changed"
    if rule == INTERVAL:
        low, high = old["low"], old["high"]
        if _numbers(low, high) and not low <= value <= high:
            return f"outside the baseline's 95% interval {format_value(low, old.get('unit', ''))} .. " \
                   f"{format_value(high, old.get('unit', ''))}"
        return None if _numbers(low, high) or value == before else "changed"
    if rule == RELATIVE:
        share = old["tolerance"]
        if abs(value - before) > share * abs(before):
            return f"off the baseline by more than {share:.0%}"
        return None
    raise ValueError(f"ledger rule {rule!r}: must be one of {EXACT}, {INTERVAL}, {RELATIVE}, {NOTED}; the baseline "
                     f"file was edited by hand or written by a newer version")


def _numbers(*values: object) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
