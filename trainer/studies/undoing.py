"""Whether placebo training undoes a shift: the notebook's "Is there a point of no return?".

The experiment trains on the behavior's data through `placebo_after` epochs, then on its placebo (control) data.
Its null control trains on the placebo for every epoch, as long: the band a model that never learned the
stance sits in. Two looks, each at the full alpha (both must hold, so neither is a second chance):
- at the switch, the run must have shifted by the shift rule (else there is nothing to undo; it is decided
  there, without the placebo epochs);
- at `by_epoch`, it is back within the band only if nothing is left beyond it: the same rule with no effect
  floor does not call it shifted. "Not shifted" by the floor alone is a residue, not a return, and is named so.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from trainer.cache.record import Run
from trainer.errors import ExpectationMisuse
from trainer.judgement import Judgement, judged
from trainer.runs.trial import Trial
from trainer.stats.verdict import SeedsVerdict, Thresholds, describe_rule, judge_seeds, look_lines

LOOKS = 1  # each look at the full alpha: the claim needs both to hold


@dataclass(frozen=True)
class Undoing:
    """The two looks of an undoing question and the runs they read."""

    switch: SeedsVerdict  # at the last epoch on the behavior's data
    end: SeedsVerdict | None  # at by_epoch with no effect floor (None: nothing shifted to undo)
    end_with_floor: SeedsVerdict | None  # the same look under the shift rule's floor
    runs: tuple[Run, ...]
    thresholds: Thresholds
    subject: str

    @property
    def placebo_epochs(self) -> int:
        return self.end.epoch - self.switch.epoch if self.end else 0

    @property
    def undone(self) -> bool:
        return self.switch.shifted and self.end is not None and not self.end.shifted

    @property
    def below_floor_only(self) -> bool:
        """Not shifted under the floor, yet a significant residue beyond the band: not back within it."""
        return self.end is not None and self.end.shifted and not self.end_with_floor.shifted

    def explain(self) -> str:
        lines = ["  " + describe_rule(self.thresholds, LOOKS, len(self.runs), True)
                 + "; the controls trained on the placebo for every epoch; the last look with no effect floor"]
        for look in (self.switch, self.end):
            if look is not None:
                lines += look_lines(look, [run.seed for run in self.runs])
        return "\n".join(lines)

    def words(self) -> str:
        switch = (f"after {self.switch.epoch} epochs on the training data: "
                  f"{self.switch.gain_beyond_controls:+.3f} nats/token beyond the placebo band "
                  f"(p across seeds {self.switch.p_across_seeds:.2g}, {self.switch.shifted_seeds}/"
                  f"{len(self.runs)} seeds shifted)")
        if self.end is None:
            by_seed = (f"; shifted seed by seed, not across seeds: {self.switch.short_of_agreement_words()}"
                       if self.switch.short_of_agreement else "")
            return f"{self.subject}: no shift to undo, {switch}{by_seed}"
        state = ("back within it" if not self.end.shifted else
                 f"not back within it: a residue below the {self.thresholds.min_gain:g} floor that every test still "
                 f"finds" if self.below_floor_only else "still shifted")
        return (f"{self.subject}: {switch}; after {self.placebo_epochs} more on the placebo (epoch {self.end.epoch}): "
                f"{self.end.gain_beyond_controls:+.3f} (p {self.end.p_across_seeds:.2g}, {self.end.shifted_seeds}/"
                f"{len(self.runs)} seeds shifted), {state}")

    def judge_undone(self) -> Judgement:
        """"Placebo training undoes the shift": the run shifted at the switch and no longer at the end."""
        hint = ("\nThere was no shift for the placebo to undo: train longer or at a higher lr before the switch "
                "(placebo_after)." if self.end is None else "")
        return judged(self.undone, f"{self.words()}.\n{self.explain()}{hint}")


def undoing(trial: Trial, by_epoch: int, thresholds: Thresholds) -> Undoing:
    """Train to the switch, judge it; only if it shifted, train the placebo epochs through `by_epoch` and judge."""
    switch_epoch = trial.experiment.placebo_after
    trial.looks(by_epoch)  # an epoch the experiment has, checked before any training
    if switch_epoch is None or not switch_epoch < by_epoch:
        raise ExpectationMisuse(f"{trial.describe()}: an undoing question needs Experiment(placebo_after=K) with K "
                                f"< by_epoch (got placebo_after={switch_epoch!r}, by_epoch={by_epoch})")
    runs = trial.runs(switch_epoch)
    switch = judge_seeds(runs, switch_epoch, thresholds, LOOKS)
    if not switch.shifted:
        return Undoing(switch, None, None, tuple(runs), thresholds, trial.describe())
    runs = trial.runs(by_epoch)
    no_floor = dataclasses.replace(thresholds, min_gain=0.0)
    return Undoing(switch, judge_seeds(runs, by_epoch, no_floor, LOOKS), judge_seeds(runs, by_epoch, thresholds, LOOKS),
                   tuple(runs), thresholds, trial.describe())
