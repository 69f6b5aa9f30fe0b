"""Early decision: train an experiment's seeds one evaluated epoch at a time, and stop once the question is decided.

A question such as "does it shift by epoch 10?" is decided at the first look where a majority of
seeds has shifted (yes), or at epoch 10 (no). Resuming is exact and cheap, so training to the
next look only when it is needed gives the same answer as training everything first, for less.
A later question that needs more epochs resumes the same cached runs.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from trainer.errors import SuiteError
from trainer.experiment import Experiment
from trainer.parallel import obtain_all
from trainer.record import Run
from trainer.runner import record_decision
from trainer.verdict import SeedsVerdict, Thresholds, judge_seeds, onset_interval

DEFAULT_SEEDS = 3


class StoppedRun(SuiteError):
    """A shift question reached past the epoch where one of its runs stopped training for good."""


@dataclass
class Trial:
    """One experiment over replicate seeds (seed, seed+1, ...), trained only as far as asked.

    The first seed keeps the experiment's own settings; replicates skip greedy generation
    (`generate=False`) because verdicts read their margins only.
    """

    experiment: Experiment
    seeds: int = DEFAULT_SEEDS
    progress: bool = True
    with_control: bool = True

    def seed_experiments(self) -> list[Experiment]:
        first = self.experiment.seed
        return [self.experiment if i == 0 else self.experiment.with_seed(first + i, generate=False)
                for i in range(self.seeds)]

    def runs(self, through_epoch: int, seeds: int | None = None) -> list[Run]:
        """Each seed's run (null control attached) through `through_epoch`, training what the cache lacks."""
        self._check_epoch(through_epoch)
        chosen = [exp.with_epochs(through_epoch) for exp in self.seed_experiments()[: seeds or self.seeds]]
        if not (self.with_control and self.experiment.data != "control"):
            return obtain_all(chosen, self.progress)
        both = obtain_all([e for exp in chosen for e in (exp, exp.control())], self.progress)
        runs = both[0::2]
        for run, control in zip(runs, both[1::2]):
            run.control = control
        return runs

    def primary(self, through_epoch: int, with_control: bool = True) -> Run:
        """The first seed's run: the one with generated text, read by the per-metric questions
        (numerical questions need no control: `with_control=False`)."""
        if not with_control:
            self._check_epoch(through_epoch)
            return obtain_all([self.experiment.with_epochs(through_epoch)], self.progress)[0]
        return self.runs(through_epoch, seeds=1)[0]

    def looks(self, by_epoch: int) -> list[int]:
        """The evaluated epochs a question about epochs 1..by_epoch inspects."""
        self._check_epoch(by_epoch)
        return self.experiment.with_epochs(by_epoch).evaluated_epochs()[1:]

    def _check_epoch(self, epoch: int) -> None:
        if not isinstance(epoch, int) or isinstance(epoch, bool) or not 1 <= epoch <= self.experiment.epochs:
            raise ValueError(f"epoch {epoch!r} is outside this experiment (epochs={self.experiment.epochs}); "
                             f"declare Experiment(..., epochs={epoch}) or ask about an epoch <= "
                             f"{self.experiment.epochs}")


@dataclass(frozen=True)
class Decision:
    """How a shift question was answered, and how much training it took."""

    question: str
    by_epoch: int
    looks: int
    verdicts: tuple[SeedsVerdict, ...]  # the looks judged, in order; the last one decided
    runs: tuple[Run, ...]
    onset_interval: tuple[float, float]

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
    decision = Decision(question, by_epoch, len(looks), tuple(verdicts), tuple(runs), interval)
    _note(decision, thresholds)
    return decision


def _check_not_stopped(runs: list[Run], epoch: int) -> None:
    """A run that stopped for good (non-finite, refused unscale) has no behavior to judge after its stop."""
    for run in runs + [r.control for r in runs if r.control is not None]:
        if run.stopped and run.stopped["epoch"] < epoch:
            raise StoppedRun(f"{run.model} seed {run.experiment['seed']} ({run.experiment['data']} data) stopped "
                             f"at epoch {run.stopped['epoch']} ({run.stopped['reason']} at step "
                             f"{run.stopped['step']}), so its behavior at epoch {epoch} cannot be judged; ask about "
                             f"epoch {run.stopped['epoch']} or earlier, or declare on_nonfinite='continue'")


def _note(decision: Decision, thresholds: Thresholds) -> None:
    """Say how the question was decided, on stderr and in every seed's record."""
    print(f"[finetune] {decision.runs[0].model}: {decision.summary()}", file=sys.stderr)
    entry = {"question": decision.question, "thresholds": thresholds.__dict__, "summary": decision.summary(),
             "onset": decision.onset, "trained_through": decision.trained_through,
             "stopped_early": decision.stopped_early, "seeds": len(decision.runs),
             "decided_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    for run in decision.runs:
        record_decision(run, entry)
