"""The experiment key: everything that changes a run's numbers, and nothing else.

The code part is the source of every package that decides a run's numbers (training and model
loading), read from the folders, not from a hand-kept list: a new module there joins the key by
existing. Experiment fields enter as values, so editing a validation message keeps every cache.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from trainer.behavior import Behavior, behavior_from_document, load_behavior
from trainer.cache.keys import OUTCOME_LIBRARIES, content_key, library_versions, source_digest
from trainer.cache.record import SCHEMA_VERSION
from trainer.experiment import Experiment
from trainer.models.quantized import require_bitsandbytes
from trainer.models.sources import resolve_model
from trainer.training.placement import is_placed, placed

TRAINER = Path(__file__).resolve().parent.parent
# Packages whose code changes what a run measures (every *.py below them enters every run key).
OUTCOME_PACKAGES = (TRAINER / "training", TRAINER / "models")

# Outside those packages, the few functions whose logic (not messages) decides a run's numbers: which epochs
# are probed and checkpointed, which data an epoch trains on, when the loss scaler is on, and which parts of a
# behavior file are trained on.
OUTCOME_FUNCTIONS = (Experiment.evaluated_epochs, Experiment.data_at, Experiment.uses_grad_scaler.fget,
                     Behavior.examples, behavior_from_document)

# Read once, at import: the key follows the code this process runs, even if files change under it.
CODE_VERSION = content_key({"packages": source_digest(OUTCOME_PACKAGES),
                            "functions": [inspect.getsource(f) for f in OUTCOME_FUNCTIONS]}, 16)


def code_version() -> str:
    return CODE_VERSION


def key_components(exp: Experiment) -> dict:
    """Everything that changes the outcome, and nothing else (the key logs its parts). The experiment is
    placed first: its device kind and process count are values in the key ("auto" is not)."""
    exp = exp if is_placed(exp) else placed(exp)
    if exp.quantize:
        require_bitsandbytes(exp.quantize)  # its version is part of the key: say how to install it, not KeyError
    source = resolve_model(exp.model)
    behavior = load_behavior(exp.behavior)
    return {
        # The scaler as resolved (grad_scaler=None means "on for fp16-autocast only"): a per-run setting, so
        # it sits with the experiment's fields and stays out of the shared baseline's key.
        "experiment": exp.key_fields() | {"grad_scaler_on": exp.uses_grad_scaler},
        "model_fingerprint": source.fingerprint(),
        "prompt_style": source.prompt_style,
        "behavior_sha256": behavior.sha256,
        "device": exp.device,  # also in the experiment's fields; here so that the shared baseline has it too
        "code_version": code_version(),
        **library_versions(OUTCOME_LIBRARIES + (("bitsandbytes",) if exp.quantize else ())),
    }


def experiment_key(exp: Experiment) -> str:
    return content_key(key_components(exp))


def baseline_key(components: dict) -> str:
    """Epoch-0 probes depend on the model, behavior, code, libraries and probe settings only, so a run
    and its null control (and any lr or seed) share one cached baseline."""
    shared = {k: v for k, v in components.items() if k != "experiment"}
    quantized = components["experiment"].get("quantize")  # a quantized base is its own epoch 0
    return content_key(shared | {"gen_tokens": components["experiment"]["gen_tokens"], "schema": SCHEMA_VERSION}
                       | ({"quantize": quantized} if quantized else {}))
