"""The run record: what a cached or fresh run measured, epoch by epoch (epoch 0 is the baseline)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Run:
    """A read-only view of a record body, limited to the epochs the request asked for."""

    body: dict
    through_epoch: int
    control: Run | None = None
    from_cache: bool = False
    path: str = ""

    @property
    def key(self) -> str:
        return self.body["key"]

    @property
    def experiment(self) -> dict:
        return self.body["experiment"]

    @property
    def model(self) -> str:
        return self.body["model"]["name"]

    @property
    def behavior(self) -> str:
        return self.body["behavior"]["name"]

    @property
    def evaluations(self) -> list[dict]:
        return [e for e in self.body["evaluations"] if e["epoch"] <= self.through_epoch]

    @property
    def baseline(self) -> dict:
        return self.evaluations[0]

    @property
    def train_log(self) -> list[dict]:
        return [e for e in self.body["train_log"] if e["epoch"] <= self.through_epoch]

    def evaluation(self, epoch: int) -> dict:
        for entry in self.evaluations:
            if entry["epoch"] == epoch:
                return entry
        stopped = self.stopped
        why = (f"; the run stopped at epoch {stopped['epoch']} ({stopped['reason']} at step {stopped['step']})"
               if stopped else "")
        raise KeyError(f"epoch {epoch} was not evaluated; evaluated: {self.evaluated_epochs}{why}")

    @property
    def nonfinite_events(self) -> list[dict]:
        """Every step that went non-finite, in order: {"step", "loss", "gradients", "weights"}."""
        return [e for entry in self.train_log for e in entry.get("nonfinite", [])]

    @property
    def stopped(self) -> dict | None:
        """Where and why training ended early for good (non-finite step, refused unscale), if it did."""
        return self.body.get("stopped")

    @property
    def evaluated_epochs(self) -> list[int]:
        return [e["epoch"] for e in self.evaluations]


@dataclass
class RunSummary:
    """Small per-epoch table for reports: mean margin, marker rate, N/M different, KL."""

    rows: list[dict] = field(default_factory=list)

    @classmethod
    def of(cls, run: Run) -> RunSummary:
        losses = {e["epoch"]: e["loss"] for e in run.train_log}
        n = len(run.baseline["margins"])
        return cls([{
            "epoch": e["epoch"], "loss": losses.get(e["epoch"]), "mean_margin": e["mean_margin"],
            "marker_rate": e.get("marker_rate"),
            "different": f"{e['differ_from_baseline']}/{n}" if "differ_from_baseline" in e else None,
            "kl_from_base": e["kl_from_base"],
        } for e in run.evaluations])
