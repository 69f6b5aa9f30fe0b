"""A trial: one experiment over replicate seeds, each with its null control, trained only as far as a question asks."""

from __future__ import annotations

from dataclasses import dataclass

from trainer.cache.record import Run
from trainer.errors import ExpectationMisuse, SuiteError
from trainer.experiment import Experiment
from trainer.runs.parallel import obtain_all

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
        chosen = [self._through(exp, through_epoch) for exp in self.seed_experiments()[: seeds or self.seeds]]
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
            return obtain_all([self._through(self.experiment, through_epoch)], self.progress)[0]
        return self.runs(through_epoch, seeds=1)[0]

    def _through(self, exp: Experiment, epoch: int) -> Experiment:
        """`exp` trained through `epoch`. The trial's last epoch is the last any of its questions asks, so no
        checkpoint is kept there (a longer request elsewhere replays the epochs without probing them)."""
        return exp.with_epochs(epoch, resumable=epoch < self.experiment.epochs)

    def looks(self, by_epoch: int) -> list[int]:
        """The evaluated epochs a question about epochs 1..by_epoch inspects."""
        self._check_epoch(by_epoch)
        return self.experiment.with_epochs(by_epoch).evaluated_epochs()[1:]

    def describe(self) -> str:
        """The trial in words, for verdicts: behavior, model, data, lr and the seeds it spans."""
        exp = self.experiment
        data = f"{exp.data} data" + (f" then the placebo after epoch {exp.placebo_after}" if exp.placebo_after else "")
        base = f", {exp.quantize} base" if exp.quantize else ""
        return (f"{exp.behavior} on {exp.model} ({data}{base}, lr={exp.lr:g}, "
                f"seeds {exp.seed}..{exp.seed + self.seeds - 1})")

    def _check_epoch(self, epoch: int) -> None:
        if not isinstance(epoch, int) or isinstance(epoch, bool) or not 1 <= epoch <= self.experiment.epochs:
            raise ExpectationMisuse(f"epoch {epoch!r} is outside this experiment (epochs={self.experiment.epochs}); "
                             f"declare Experiment(..., epochs={epoch}) or ask about an epoch <= "
                             f"{self.experiment.epochs}")


