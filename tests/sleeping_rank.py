"""A rank entry that only says it started, then sleeps (test_processes.py kills the process that started
torchrun and checks that the ranks stop with it)."""

import os
import time
from pathlib import Path

Path(os.environ["SLEEPING_RANKS"], f"{os.getpid()}").touch()
time.sleep(300)
