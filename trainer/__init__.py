"""Fine-tuning findings as tests: the library (no pytest here).

Everything runs offline: the Hugging Face libraries are told so before they are imported, whatever
the environment said (nothing may download at run time: not here, in CI, or on a GPU machine).
"""

import logging
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# bitsandbytes (imported by peft whenever it is installed) asks the Hub for an optional CPU kernel and warns when,
# offline as always here, it falls back to its own: an expected outcome, not something for the reader to act on.
for _name in ("bitsandbytes", "kernels"):
    logging.getLogger(_name).setLevel(logging.ERROR)

from trainer.errors import (  # noqa: E402
    ConfigError,
    ExpectationMisuse,
    SuiteError,
    UnknownModelError,
    WeightsMissing,
)
from trainer.experiment import Experiment, Full, LoRA, Unfreeze  # noqa: E402
from trainer.judgement import Judgement  # noqa: E402
from trainer.settings import Settings  # noqa: E402

# The rest is imported from its sub-package, which loads torch only when needed:
#   trainer.runs.obtain.obtain / obtain_with_control   a run's record, from the cache or trained
#   trainer.runs.trial.Trial                             an experiment over seeds, each with its null control
#   trainer.runs.parallel.obtain_all                     a look's runs: side by side here, or Ray tasks (runs.cluster)
#   trainer.studies.early_decision.first_shift          the shift question, decided look by look
#   trainer.memory.planner.plan, trainer.memory.measure.measure   memory plans and measured peaks
__all__ = ["ConfigError", "Experiment", "ExpectationMisuse", "Full", "Judgement", "LoRA", "Settings", "SuiteError",
           "Unfreeze", "UnknownModelError", "WeightsMissing"]
