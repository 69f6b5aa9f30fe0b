"""Early decision: train an experiment's seeds one evaluated epoch at a time, and stop once the question is decided.

A question such as "does it shift by epoch 10?" is decided at the first look where a majority of
seeds has shifted (yes), or at epoch 10 (no). Resuming is exact and cheap, so training to the
next look only when it is needed gives the same answer as training everything first, for less.
A later question that needs more epochs resumes the same cached runs.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass

from trainer.cache.record import Run
from trainer.judgement import Judgement, judged
from trainer.runs.obtain import record_decision
from trainer.runs.trial import StoppedRun, Trial
from trainer.stats.verdict import (
    SeedsVerdict,
    Thresholds,
    describe_rule,
    epoch_words,
    judge_seeds,
    look_lines,
    onset_interval,
)


@dataclass(frozen=True)
class Decision:
    """How a shift question was answered, and how much training it took."""

    question: str
    by_epoch: int
    looks: int
    verdicts: tuple[SeedsVerdict, ...]  # the looks judged, in order; the last one decided
    runs: tuple[Run, ...]
    onset_interval: tuple[float, float]
    thresholds: Thresholds
    subject: str  # the trial in words (Trial.describe)

    @property
    def onset(self) -> int | None:
        return next((v.epoch for v in self.verdicts if v.shifted), None)

    @property
    def trained_through(self) -> int:
        return self.verdicts[-1].epoch

    @property
    def stopped_early(self) -> bool:
        return self.trained_through < self.by_epoch

    def summary(self) -> str:
        outcome = (f"shifted at epoch {self.onset}" if self.onset is not None
                   else f"no shift through epoch {self.by_epoch}")
        saved = (f"; stopped early, epochs {self.trained_through + 1}-{self.by_epoch} not trained"
                 if self.stopped_early else "")
        return f"{self.question}: decided after epoch {self.trained_through} ({outcome}){saved}"

    def gain_words(self) -> str:
        """The deciding look's headline figures: the seeds' mean margin gain and the gain beyond their controls."""
        look = self.verdicts[-1]
        beyond = f", {look.gain_beyond_controls:+.2f} beyond the controls" if self.runs[0].control is not None else ""
        return f" (epoch {look.epoch}: mean gain {look.mean_gain:+.2f} nats/token{beyond})"

    def explain(self) -> str:
        """The rule, every look it took (each seed's reading), and the onset's interval."""
        lines = ["  " + describe_rule(self.thresholds, self.looks, len(self.runs), self.runs[0].control is not None)]
        for look in self.verdicts:
            lines += look_lines(look, [run.seed for run in self.runs])
        low, high = self.onset_interval
        lines.append(f"  onset 95% interval (bootstrap over seeds and probes): {epoch_words(low)} .. "
                     f"{epoch_words(high)}; {self.summary()}")
        return "\n".join(lines)

    def below_floor(self) -> tuple[float, float] | None:
        """When no look shifted only because of the effect floor: the gain beyond the controls per epoch at the
        deciding look, and the epoch at which that rate would reach the floor. "Only because of the floor" means
        the deciding look passes the same tests with a floor of 0 (every p-value under its alpha)."""
        look = self.verdicts[-1]
        if self.onset is not None or look.gain_beyond_controls <= 0 or self.thresholds.min_gain <= 0:
            return None
        without_floor = dataclasses.replace(self.thresholds, min_gain=0.0)
        if not judge_seeds(list(self.runs), look.epoch, without_floor, self.looks).shifted:
            return None
        rate = look.gain_beyond_controls / look.epoch
        return rate, self.thresholds.min_gain / rate

    def floor_words(self) -> str:
        """ "moving, below the floor" with its rate and projected crossing, or nothing."""
        moving = self.below_floor()
        if moving is None:
            return ""
        rate, crossing = moving
        look = self.verdicts[-1]
        return (f"\nMoving, below the floor: at epoch {look.epoch} the gain beyond the controls "
                f"({look.gain_beyond_controls:+.3f} nats/token) passes every test (p across seeds "
                f"{look.p_across_seeds:.1g}) except the {self.thresholds.min_gain:g} effect floor, so this verdict "
                f"rests on the floor alone. Its rate is {rate:+.4f} nats/token per epoch; a straight line at that "
                f"rate from epoch 0 would reach the floor near epoch {crossing:.0f} (a projection, not a measurement).")

    def short_of_seeds(self) -> SeedsVerdict | None:
        """The first look, when no look shifted, at which a majority of seeds shifted on its own and the gain beyond
        the controls passed the floor, but the test across seeds missed alpha / looks: a no-shift for want of
        agreement (or of seeds), not for want of movement."""
        if self.onset is not None:
            return None
        return next((v for v in self.verdicts if v.short_of_agreement), None)

    def seeds_words(self) -> str:
        """ "shifted seed by seed, not across seeds" with the figures, or nothing."""
        look = self.short_of_seeds()
        if look is None:
            return ""
        return (f"\nShifted seed by seed, not across seeds: from epoch {look.epoch}, {look.short_of_agreement_words()} "
                f"({self.looks} looks). This verdict rests on that test's power with {len(self.runs)} seeds; more "
                f"seeds (--ft-seeds) or fewer looks would decide it.")

    def judge_shift(self) -> Judgement:
        """"It shifts by epoch N": holds when the experiment shifted at some look up to N."""
        if self.onset is not None:
            return judged(True, f"{self.subject} shifted at epoch {self.onset}{self.gain_words()}.\n{self.explain()}")
        return judged(False, f"{self.subject} did not shift by epoch {self.by_epoch}{self.gain_words()}."
                             f"{self.floor_words()}{self.seeds_words()}\n{self.explain()}\n"
                             f"Likely causes: too few epochs or too low a learning rate for this model; try more "
                             f"epochs or a higher lr, or look at the probe table in the report.")

    def judge_no_shift(self) -> Judgement:
        """"It does not shift through epoch N": holds when no look up to N shifted."""
        if self.onset is None:
            return judged(True, f"{self.subject} did not shift through epoch {self.by_epoch}{self.gain_words()}."
                                f"{self.floor_words()}{self.seeds_words()}\n{self.explain()}")
        return judged(False, f"{self.subject} shifted at epoch {self.onset}{self.gain_words()}, expected no shift "
                             f"through epoch {self.by_epoch}.\n{self.explain()}")


def first_shift(trial: Trial, by_epoch: int, thresholds: Thresholds, question: str) -> Decision:
    """Walk the looks up to `by_epoch`, training each seed to the next look only if still undecided."""
    looks = trial.looks(by_epoch)
    verdicts: list[SeedsVerdict] = []
    runs: list[Run] = []
    for epoch in looks:
        runs = trial.runs(epoch)
        _check_not_stopped(runs, epoch)
        verdicts.append(judge_seeds(runs, epoch, thresholds, len(looks)))
        if verdicts[-1].shifted:
            break
    interval = onset_interval(runs, [v.epoch for v in verdicts], thresholds, len(looks))
    decision = Decision(question, by_epoch, len(looks), tuple(verdicts), tuple(runs), interval, thresholds,
                        trial.describe())
    _note(decision, thresholds)
    return decision


def first_shift_among(trials: list[Trial], by_epoch: int, thresholds: Thresholds, question: str) -> list[Decision]:
    """Decide each trial in turn, stopping at the first that shifts: one shift contradicts "none of these
    shifts", so the trials after it are not trained. Put the likeliest to shift first."""
    decisions: list[Decision] = []
    for trial in trials:
        decisions.append(first_shift(trial, by_epoch, thresholds, question))
        if decisions[-1].onset is not None:
            break
    return decisions


def judge_none_shift(decisions: list[Decision], trials: list[Trial], by_epoch: int) -> Judgement:
    """A claim of impossibility ("no configuration shifts"): holds when none of the trials shifted through
    `by_epoch`, for the configurations tried and no others; one that shifted contradicts it."""
    lines = [f"  - {trial.experiment.recipe}: {_outcome_words(decision)}" for trial, decision in zip(trials, decisions)]
    untried = [trial.experiment.recipe for trial in trials[len(decisions):]]
    if untried:
        lines.append(f"  not trained, the claim being contradicted already: {'; '.join(untried)}")
    subject = trials[0].describe()
    shifted = next((d for d in decisions if d.onset is not None), None)
    if shifted is None:
        return judged(True, f"None of {len(trials)} configurations shifted {subject} through epoch {by_epoch} (the "
                            f"claim holds for these, and says nothing of others):\n" + "\n".join(lines))
    recipe = trials[decisions.index(shifted)].experiment.recipe
    return judged(False, f"{recipe} shifted {subject} at epoch {shifted.onset}, so the claim that no configuration "
                         f"shifts is contradicted:\n" + "\n".join(lines) + f"\n{shifted.explain()}")


def _outcome_words(decision: Decision) -> str:
    outcome = f"shifted at epoch {decision.onset}" if decision.onset is not None else \
        f"no shift through epoch {decision.by_epoch}"
    moving = decision.below_floor()
    floor = f"; moving, below the floor ({moving[0]:+.4f} nats/token per epoch, would reach it near epoch " \
            f"{moving[1]:.0f})" if moving else ""
    seeds = "; shifted seed by seed, not across seeds" if decision.short_of_seeds() else ""
    return outcome + decision.gain_words() + floor + seeds


def _check_not_stopped(runs: list[Run], epoch: int) -> None:
    """A run that stopped for good (non-finite, refused unscale) has no behavior to judge after its stop."""
    for run in runs + [r.control for r in runs if r.control is not None]:
        if run.stopped and run.stopped.epoch < epoch:
            raise StoppedRun(f"{run.model} seed {run.experiment['seed']} ({run.experiment['data']} data) stopped "
                             f"at epoch {run.stopped.epoch} ({run.stopped.reason} at step "
                             f"{run.stopped.step}), so its behavior at epoch {epoch} cannot be judged; ask about "
                             f"epoch {run.stopped.epoch} or earlier, or declare on_nonfinite='continue'")


def _note(decision: Decision, thresholds: Thresholds) -> None:
    """Say how the question was decided, on stderr and beside every seed's record."""
    print(f"[finetune] {decision.runs[0].model}: {decision.summary()}", file=sys.stderr)
    entry = {"question": decision.question, "thresholds": thresholds.__dict__, "summary": decision.summary(),
             "onset": decision.onset, "trained_through": decision.trained_through,
             "stopped_early": decision.stopped_early, "seeds": len(decision.runs),
             "decided_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    for run in decision.runs:
        record_decision(run, entry)
