"""Numerical findings as pure functions of one run's record: did a step go non-finite, did training stop,
which layers moved most."""

from __future__ import annotations

from trainer.cache.record import NonfiniteEvent, Run, Stop
from trainer.errors import ExpectationMisuse
from trainer.judgement import Judgement, judged

NONFINITE_PARTS = ("loss", "gradients", "weights")
# How far (in relative depth, 0 = first decoder layer, 1 = past the last) a most-changed layer may sit
# from the depth a claim names and still count as "near" it: one layer in ten.
LAYER_DEPTH_TOLERANCE = 0.1


def judge_stays_finite(run: Run, subject: str) -> Judgement:
    """No step had a non-finite loss, gradient or weight, and training did not stop."""
    events = run.nonfinite_events
    if not events and not run.stopped:
        return judged(True, f"{subject} stayed finite; {stop_words(run)}")
    first = events[0] if events else run.stopped
    return judged(False, f"{subject} went non-finite at step {first.step}{flag_words(first)}; {stop_words(run)}")


def judge_goes_nonfinite(run: Run, by_epoch: int, what: str | None, subject: str) -> Judgement:
    """Some step by `by_epoch` went non-finite (in `what`: loss, gradients or weights, if given)."""
    if what not in (None, *NONFINITE_PARTS):
        raise ExpectationMisuse(f"what={what!r}: must be 'loss', 'gradients', 'weights' or None (any)")
    hits = [e for e in run.nonfinite_events if what is None or getattr(e, what)]
    if hits:
        return judged(True, f"{subject} went non-finite at step {hits[0].step}{flag_words(hits[0])}")
    worst = max((e.grad_norm for e in run.train_log), default=float("nan"))
    others = ", ".join(f"step {e.step}{flag_words(e)}" for e in run.nonfinite_events) or "none"
    return judged(False, f"{subject} stayed finite{'' if what is None else ' in its ' + what} through epoch "
                         f"{by_epoch}: largest gradient norm {worst:.3g}, last loss {run.train_log[-1].loss:.4g}; "
                         f"other non-finite steps: {others}")


def judge_stops_with(run: Run, message: str, by_epoch: int, subject: str) -> Judgement:
    """Training ended by `by_epoch` with an error containing `message` (e.g. a refused unscale)."""
    holds = run.stopped is not None and message in run.stopped.reason
    return judged(holds, f"{subject} {'stopped' if holds else 'did not stop'} with {message!r} by epoch "
                         f"{by_epoch}: {stop_words(run)}")


def judge_layers_near(run: Run, depths: tuple[float, ...], epoch: int, subject: str,
                      tolerance: float = LAYER_DEPTH_TOLERANCE) -> Judgement:
    """At `epoch`, the len(depths) most-changed decoder layers sit within `tolerance` of the given relative
    depths (one layer per depth)."""
    top = run.evaluation(epoch).layers.top[: len(depths)]
    found = sorted(t.depth for t in top)
    holds = all(abs(a - b) <= tolerance for a, b in zip(sorted(depths), found))
    words = ", ".join(f"layer {t.layer} ({t.depth:.0%}, change {t.relative_change:.3g})" for t in top)
    return judged(holds, f"{subject}: the {len(depths)} most-changed layers at epoch {epoch} are {words}, "
                         f"{'' if holds else 'not '}within {tolerance:.0%} of {[f'{d:.0%}' for d in depths]}")


def flag_words(event: NonfiniteEvent | Stop) -> str:
    flags = event.flags() if isinstance(event, NonfiniteEvent) else []
    return f" ({', '.join(flags)})" if flags else ""


def stop_words(run: Run) -> str:
    if run.stopped:
        return f"training stopped at epoch {run.stopped.epoch}, step {run.stopped.step}: {run.stopped.reason}"
    return f"trained through epoch {run.train_log[-1].epoch if run.train_log else 0} without stopping"
