"""The run record, typed: what a cached or fresh run measured, epoch by epoch (epoch 0 is the baseline).

A record on disk is JSON inside a checksummed envelope (trainer.cache.store). Its `schema` says which
shape it has; a record of another schema (written by an older version of this code) is not read
field by field into a KeyError: `RunRecord.from_json` refuses it with `RecordSchemaError`, and the
reader quarantines it and trains again, as with any damaged entry.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from trainer.cache import store
from trainer.errors import CacheCorrupt

T = TypeVar("T")

SCHEMA_VERSION = 3  # 1: the untyped dict of earlier versions (no `schema` field); 2: typed; 3: + placement


class RecordSchemaError(CacheCorrupt):
    """A record whose shape is not this code's: another schema version, a missing or unknown field."""


@dataclass(frozen=True)
class NonfiniteEvent:
    """A step whose loss, gradient norm or weights were not finite (steps number from 1)."""

    step: int
    loss: bool
    gradients: bool
    weights: bool

    def flags(self) -> list[str]:
        return [name for name in ("loss", "gradients", "weights") if getattr(self, name)]


@dataclass(frozen=True)
class Stop:
    """Where training ended for good (the step and its epoch) and why (non-finite step, refused unscale)."""

    step: int
    reason: str
    epoch: int


@dataclass
class EpochLog:
    """One epoch of training: mean loss, largest gradient norm, what went non-finite, how long it took."""

    epoch: int
    loss: float
    grad_norm: float
    steps: int
    nonfinite: list[NonfiniteEvent] = field(default_factory=list)
    scaler_skipped_steps: list[int] = field(default_factory=list)
    layer_grad_norms: list[float] = field(default_factory=list)
    seconds: float = 0.0
    stopped: Stop | None = None

    @property
    def nonfinite_steps(self) -> list[int]:
        return [event.step for event in self.nonfinite]


@dataclass(frozen=True)
class TopLayer:
    layer: int
    depth: float  # index / layer count (the notebook's 13/24 = 54%)
    relative_change: float


@dataclass(frozen=True)
class LayerChanges:
    """Relative weight change per decoder layer since the start of training, and the most-changed ones."""

    relative_change: list[float]
    top: list[TopLayer]


@dataclass
class Evaluation:
    """The probes at one evaluated epoch. Text fields are None where generation was skipped
    (generate=False, or logits not finite)."""

    epoch: int
    margins: list[float]  # per probe: stance minus contrast log-likelihood, nats/token
    mean_margin: float
    kl_from_base: float  # mean KL from the base model on neutral prompts, nats
    finite_logits: bool
    generations: list[str] | None = None
    marker_hits: list[bool] | None = None
    marker_rate: float | None = None
    differ_from_baseline: int | None = None
    probe_seconds: float | None = None
    layers: LayerChanges | None = None

    @property
    def has_text(self) -> bool:
        return self.generations is not None


@dataclass(frozen=True)
class ModelInfo:
    name: str
    parameters: int  # the model's own (LoRA adapters excluded)
    published_parameters: int | None
    fingerprint: str
    prompt_style: str


@dataclass(frozen=True)
class BehaviorInfo:
    name: str
    version: int
    sha256: str


@dataclass(frozen=True)
class MethodInfo:
    trainable_parameters: int
    trained_layers: list[int]
    decoder_layers: int


@dataclass
class Placement:
    """Where the run trained: device kind and name, processes and their backend, who autocast, versions."""

    device: str
    device_name: str
    processes: int
    backend: str | None
    precision: str
    autocast_by: str
    accelerate_precision: str
    torch: str
    cuda: str | None


@dataclass
class RunRecord:
    """Everything one run measured. `experiment` holds the Experiment's fields as plain values (the
    run's identity in words); `key_components` every part of its cache key."""

    key: str
    key_components: dict
    experiment: dict
    model: ModelInfo
    behavior: BehaviorInfo
    method: MethodInfo
    probes: list[str]
    epochs_done: int = 0
    checkpoint: str | None = None
    train_log: list[EpochLog] = field(default_factory=list)
    evaluations: list[Evaluation] = field(default_factory=list)
    stopped: Stop | None = None
    placement: Placement | None = None
    schema: int = SCHEMA_VERSION

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> RunRecord:
        """The typed record; RecordSchemaError when `data` is of another schema or shape."""
        schema = data.get("schema", 1) if isinstance(data, dict) else None
        if schema != SCHEMA_VERSION:
            raise RecordSchemaError(f"record of schema {schema}, this code reads schema {SCHEMA_VERSION}")
        return _build(cls, data, "record")

    def answers(self, epochs: int) -> bool:
        """Whether this record covers a request for `epochs`: it reached them, or stopped for good before."""
        return self.epochs_done >= epochs or self.stopped is not None


def evaluation_from_json(data: dict) -> Evaluation:
    """A typed evaluation (e.g. a cached baseline); RecordSchemaError when its fields are not this code's."""
    return _build(Evaluation, data, "evaluation")


def read_or_quarantine(path: Path, build: Callable[[dict], T]) -> T | None:
    """A typed entry from a checksummed file: None when absent; a damaged one, or one whose shape is not this
    code's (`build` raises RecordSchemaError), is moved aside and reported, so the caller recomputes it."""
    data = store.read_record_or_quarantine(path)
    if data is None:
        return None
    try:
        return build(data)
    except RecordSchemaError as error:
        print(f"[finetune] {path}: {error}; moved to {store.quarantine(path)} and recomputing", file=sys.stderr)
        return None


def _build(kind: type, value: object, where: str):
    """`value` (parsed JSON) as an instance of `kind`, recursing through dataclasses, lists and optionals."""
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise RecordSchemaError(f"{where}: expected an object for {kind.__name__}, got {type(value).__name__}")
        hints = typing.get_type_hints(kind)
        names = {f.name for f in dataclasses.fields(kind) if f.init}
        unknown, missing = set(value) - names, {f.name for f in dataclasses.fields(kind) if f.init and
                                                f.default is dataclasses.MISSING and
                                                f.default_factory is dataclasses.MISSING} - set(value)
        if unknown or missing:
            raise RecordSchemaError(f"{where}: {kind.__name__} has unknown fields {sorted(unknown)} "
                                    f"and lacks {sorted(missing)}")
        return kind(**{name: _build(hints[name], item, f"{where}.{name}") for name, item in value.items()})
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        chosen = [a for a in args if a is not type(None)]
        return _build(chosen[0], value, where) if len(chosen) == 1 else value
    if origin is list:
        if not isinstance(value, list):
            raise RecordSchemaError(f"{where}: expected a list, got {type(value).__name__}")
        return [_build(args[0], item, f"{where}[{i}]") for i, item in enumerate(value)] if args else value
    return value


@dataclass
class Run:
    """A read-only view of a record, limited to the epochs the request asked for."""

    record: RunRecord
    through_epoch: int
    control: Run | None = None
    from_cache: bool = False
    path: str = ""

    @property
    def key(self) -> str:
        return self.record.key

    @property
    def experiment(self) -> dict:
        return self.record.experiment

    @property
    def model(self) -> str:
        return self.record.model.name

    @property
    def behavior(self) -> str:
        return self.record.behavior.name

    @property
    def seed(self) -> int:
        return self.record.experiment["seed"]

    @property
    def evaluations(self) -> list[Evaluation]:
        return [e for e in self.record.evaluations if e.epoch <= self.through_epoch]

    @property
    def baseline(self) -> Evaluation:
        return self.evaluations[0]

    @property
    def train_log(self) -> list[EpochLog]:
        return [e for e in self.record.train_log if e.epoch <= self.through_epoch]

    def evaluation(self, epoch: int) -> Evaluation:
        for entry in self.evaluations:
            if entry.epoch == epoch:
                return entry
        stopped = self.stopped
        why = f"; the run stopped at epoch {stopped.epoch} ({stopped.reason} at step {stopped.step})" if stopped else ""
        raise KeyError(f"epoch {epoch} was not evaluated; evaluated: {self.evaluated_epochs}{why}")

    @property
    def nonfinite_events(self) -> list[NonfiniteEvent]:
        """Every step that went non-finite, in order."""
        return [event for entry in self.train_log for event in entry.nonfinite]

    @property
    def stopped(self) -> Stop | None:
        """Where and why training ended early for good (non-finite step, refused unscale), if it did."""
        return self.record.stopped

    @property
    def evaluated_epochs(self) -> list[int]:
        return [e.epoch for e in self.evaluations]


@dataclass
class RunSummary:
    """Small per-epoch table for reports: mean margin, marker rate, N/M different, KL."""

    rows: list[dict] = field(default_factory=list)

    @classmethod
    def of(cls, run: Run) -> RunSummary:
        losses = {e.epoch: e.loss for e in run.train_log}
        n = len(run.baseline.margins)
        return cls([{
            "epoch": e.epoch, "loss": losses.get(e.epoch), "mean_margin": e.mean_margin,
            "marker_rate": e.marker_rate,
            "different": f"{e.differ_from_baseline}/{n}" if e.differ_from_baseline is not None else None,
            "kl_from_base": e.kl_from_base,
        } for e in run.evaluations])
