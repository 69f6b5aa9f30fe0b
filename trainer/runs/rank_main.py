"""One rank of a several-process run (started by torchrun from trainer.runs.ranks): read the run's spec,
train this rank's share, and on failure leave the error where the launching process reads it."""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

from trainer import settings
from trainer.experiment import Experiment
from trainer.runs.obtain import read_run_record
from trainer.training.session import train_run


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    rank = int(os.environ.get("RANK", "0"))
    try:
        settings.use(_settings(spec["settings"]))
        exp = Experiment.from_fields(spec["experiment"])
        folder = Path(spec["folder"])
        train_run(exp, folder, read_run_record(folder), key=spec["key"], components=spec["components"],
                  baseline_path=Path(spec["baseline_path"]), progress=spec["progress"])
    except BaseException:
        Path(spec["errors"], f"rank-{rank}.txt").write_text(traceback.format_exc())
        raise
    finally:
        _leave_process_group()
    return 0


def _settings(fields: dict) -> settings.Settings:
    tuples = {name: tuple(value) for name, value in fields.items() if isinstance(value, list)}
    return settings.Settings(**(fields | tuples))


def _leave_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
