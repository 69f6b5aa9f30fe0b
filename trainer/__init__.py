"""Fine-tuning findings as tests: the library (no pytest here).

Everything runs offline: the Hugging Face libraries are told so before they are imported, whatever
the environment said (nothing may download at run time: not here, in CI, or on a GPU machine).
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from trainer.errors import ConfigError, SuiteError, UnknownModelError, WeightsMissing  # noqa: E402
from trainer.experiment import Experiment, Full  # noqa: E402

__all__ = ["ConfigError", "Experiment", "Full", "SuiteError", "UnknownModelError", "WeightsMissing"]
