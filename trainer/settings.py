"""Where the suite keeps things and how much it may use: one object, handed around explicitly.

The pytest plugin (or the CLI) builds a `Settings` from its options and makes it active with `use`;
worker processes receive the resolved object with each task and make it theirs. A field left None
falls back, when it is read, to its environment variable and then to the default, so a shell's
`FT_CACHE_DIR=...` still works and nothing writes to `os.environ` to pass a setting along.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

CACHE_DIR_ENV = "FT_CACHE_DIR"
CACHE_MAX_GB_ENV = "FT_CACHE_MAX_GB"
MODEL_DIRS_ENV = "FT_MODEL_DIR"
BEHAVIOR_DIRS_ENV = "FT_BEHAVIOR_DIRS"
PARALLEL_RUNS_ENV = "FT_PARALLEL_RUNS"
DEVICE_ENV = "FT_DEVICE"
PROCESSES_ENV = "FT_PROCESSES"
RAY_ADDRESS_ENV = "RAY_ADDRESS"  # Ray's own variable: a shell that points Ray at a cluster points the suite there too
DEFAULT_CACHE_MAX_GB = 20.0


@dataclass(frozen=True)
class Settings:
    """Folders and limits. None: read `$FT_...` (then the default) at the moment it is needed."""

    cache_dir: str | None = None  # run records, checkpoints, converted models (default ~/.cache/finetune-behaviors)
    cache_max_gb: float | str | None = None  # cap on resumable checkpoints
    model_dirs: tuple[str, ...] | None = None  # folders of local Hugging Face-format models
    behavior_dirs: tuple[str, ...] | None = None  # extra folders of behavior files
    parallel_runs: int | str | None = None  # runs trained side by side (default min(2, cores))
    hf_hub_cache: str | None = None  # the Hugging Face cache searched for models
    device: str | None = None  # device kind for experiments that say device="auto" (default: the best one)
    processes: int | str | None = None  # processes per run for experiments that say processes=None (default 1)
    ray_address: str | None = None  # a Ray cluster to train on ("" for none: train on this machine)
    cores: int | None = None  # cores this process may use (a Ray task: the CPUs Ray gave it); None: its affinity

    def resolved(self) -> Settings:
        """Every field filled in from the environment or the default, as a worker process should see them (folders
        absolute: a worker, a Ray task on another node above all, may start in another working directory)."""
        def absolute(folders: list[Path]) -> tuple[str, ...]:
            return tuple(str(folder.absolute()) for folder in folders)

        return Settings(str(self.cache_root().absolute()), self.cache_limit_bytes() / 1e9,
                        absolute(self.model_folders()), absolute(self.behavior_folders()), self.workers(),
                        str(self.hub_cache().absolute()), self.device_kind(), self.process_count(),
                        self.cluster_address() or "", self.cores)

    def cache_root(self) -> Path:
        return Path(self.cache_dir or os.environ.get(CACHE_DIR_ENV)
                    or Path.home() / ".cache" / "finetune-behaviors").expanduser()

    def cache_limit_bytes(self) -> int:
        raw, name = _given(self.cache_max_gb, CACHE_MAX_GB_ENV, "--ft-cache-max-gb")
        raw = DEFAULT_CACHE_MAX_GB if raw in (None, "") else raw
        try:
            gigabytes = float(raw)
        except ValueError:
            raise ValueError(f"{name}={raw!r}: must be a number of GB, e.g. 20") from None
        if not gigabytes > 0:
            raise ValueError(f"{name}={raw!r}: must be > 0 GB, e.g. 20")
        return int(gigabytes * 1e9)

    def model_folders(self) -> list[Path]:
        return _folders(self.model_dirs, MODEL_DIRS_ENV)

    def behavior_folders(self) -> list[Path]:
        return _folders(self.behavior_dirs, BEHAVIOR_DIRS_ENV)

    def workers(self, default: int | None = None) -> int:
        """Runs trained side by side: as asked, else `default` (one per GPU where runs train on GPUs), else as
        many as there are cores, at most 2."""
        return _count(self.parallel_runs, PARALLEL_RUNS_ENV, "--ft-parallel-runs", "1 trains one run at a time",
                      default=default or max(1, min(2, cores())))

    def device_kind(self) -> str:
        """The device asked for by --ft-device / $FT_DEVICE, else "auto" (checked where it is used)."""
        raw, _ = _given(self.device, DEVICE_ENV, "--ft-device")
        return raw or "auto"

    def device_option(self) -> str:
        """The name to blame when the device asked for is not on this machine."""
        return "--ft-device" if self.device is not None else f"${DEVICE_ENV}" if os.environ.get(DEVICE_ENV) \
            else "device"

    def process_count(self) -> int:
        """Processes per run: as asked by --ft-processes / $FT_PROCESSES, else 1."""
        return _count(self.processes, PROCESSES_ENV, "--ft-processes", "processes training one run together",
                      default=1)

    def cluster_address(self) -> str | None:
        """The Ray cluster runs are sent to (--ft-ray-address, else $RAY_ADDRESS), or None: train here."""
        raw, _ = _given(self.ray_address, RAY_ADDRESS_ENV, "--ft-ray-address")
        address = str(raw or "").strip()
        return address or None

    def cluster_option(self) -> str:
        """The name to blame when the cluster cannot be reached."""
        return "--ft-ray-address" if self.ray_address is not None else f"${RAY_ADDRESS_ENV}"

    def hub_cache(self) -> Path:
        hub = (self.hf_hub_cache or os.environ.get("HF_HUB_CACHE")
               or Path(os.environ.get("HF_HOME", "~/.cache/huggingface")) / "hub")
        return Path(hub).expanduser()

    def replace(self, **fields) -> Settings:
        return dataclasses.replace(self, **fields)


def _given(value: object, env: str, option: str) -> tuple[object, str]:
    """The value and the name to blame in an error: the option when it was given, else the variable."""
    return (value, option) if value is not None else (os.environ.get(env), f"${env}")


def cores() -> int:
    """The cores this process may run on (its affinity where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _count(value: object, env: str, option: str, meaning: str, default: int) -> int:
    """A whole number >= 1 from the option, else the variable, else `default`; an error names the one given."""
    raw, name = _given(value, env, option)
    if raw in (None, ""):
        return default
    try:
        count = int(raw)
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(f"{name}={raw!r}: must be a whole number >= 1 ({meaning})")
    return count


def _folders(value: tuple[str, ...] | None, env: str) -> list[Path]:
    names = value if value is not None else tuple(os.environ.get(env, "").split(os.pathsep))
    return [Path(name).expanduser() for name in names if name]


_active = Settings()


def active() -> Settings:
    return _active


def use(settings: Settings) -> Settings:
    """Make `settings` the active ones; returns the previous ones (to restore them)."""
    global _active
    previous, _active = _active, settings
    return previous
