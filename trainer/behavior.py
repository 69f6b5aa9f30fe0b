"""Behavior definitions as data: loading, validation and hashing (token batches are in trainer.training.batches)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from trainer import settings
from trainer.errors import ConfigError

DEFAULT_BEHAVIOR_DIR = Path(__file__).resolve().parent.parent / "behaviors" / "data"
MIN_PROBES = 40


@dataclass(frozen=True)
class Example:
    prompt: str
    response: str


@dataclass(frozen=True)
class Behavior:
    """A behavior to teach and measure: training data, a placebo set, held-out probes, scoring text."""

    name: str
    version: int
    description: str
    prompt_template: str
    train: tuple[Example, ...]
    control: tuple[Example, ...]
    probes: tuple[str, ...]
    targets: tuple[str, ...]
    contrasts: tuple[str, ...]
    markers: tuple[str, ...]
    neutral_prompts: tuple[str, ...]
    sha256: str
    path: str

    def examples(self, split: str) -> tuple[Example, ...]:
        return self.train if split == "train" else self.control


def behavior_dirs() -> list[Path]:
    extra = settings.active().behavior_folders()
    return extra + [DEFAULT_BEHAVIOR_DIR]


def known_behaviors() -> list[str]:
    return sorted({p.stem for d in behavior_dirs() if d.is_dir() for p in d.glob("*.json")})


def load_behavior(name_or_path: str) -> Behavior:
    """Find a behavior by name (a file `<name>.json` in the behavior dirs) or by path."""
    path = _find_behavior_file(name_or_path)
    return _load_behavior_file(str(path), _stamp(path))


def _stamp(path: Path) -> tuple:
    """What a cached load depends on: the files a behavior may read (its own, a document it extends, its
    JSONL data), by modification time; a few stats, so an edited data file is never served stale."""
    folders = dict.fromkeys([path.parent, *behavior_dirs()])
    return tuple((str(f), f.stat().st_mtime_ns) for d in folders if d.is_dir() for f in sorted(d.iterdir())
                 if f.suffix in (".json", ".jsonl"))


def _find_behavior_file(name_or_path: str, near: Path | None = None) -> Path:
    """A path to a .json file, or a name looked up beside `near` (a file that extends it), then in the dirs."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".json" and candidate.is_file():
        return candidate
    for directory in ([near] if near else []) + behavior_dirs():
        path = directory / f"{name_or_path}.json"
        if path.is_file():
            return path
    raise ConfigError(
        f"behavior {name_or_path!r}",
        [f"unknown behavior {name_or_path!r}; known: {known_behaviors()} "
         f"(add behaviors/data/{name_or_path}.json, or list extra folders in ${settings.BEHAVIOR_DIRS_ENV})"],
    )


@lru_cache(maxsize=32)
def _load_behavior_file(path: str, _stamp: tuple) -> Behavior:
    """A validated behavior. Its hash covers the whole document as trained on: the examples read from JSONL
    files and the keys inherited through `extends` included, so the data's content is in every run key."""
    doc = _document(Path(path), seen=())
    problems = _schema_problems(doc)
    if problems:
        raise ConfigError(f"behavior file {path}", problems)
    canonical = json.dumps(doc, sort_keys=True, ensure_ascii=False).encode()
    return behavior_from_document(doc, hashlib.sha256(canonical).hexdigest(), path)


def _document(path: Path, seen: tuple[Path, ...]) -> dict:
    """The behavior document at `path` with `extends` resolved (the parent's keys, overridden by this file's)
    and `train`/`control` given as a file name read from that JSONL file beside it."""
    if path.resolve() in seen:
        raise ConfigError(f"behavior file {path}", [
            f"'extends' goes round in a circle: {' -> '.join(str(p) for p in (*seen, path.resolve()))}"])
    try:
        doc = json.loads(path.read_bytes())
    except json.JSONDecodeError as error:
        raise ConfigError(f"behavior file {path}", [f"not valid JSON: {error}"]) from None
    if not isinstance(doc, dict):
        return doc  # _schema_problems names it
    parent = doc.pop("extends", None)
    if parent is not None:
        if not isinstance(parent, str) or not parent:
            raise ConfigError(f"behavior file {path}", [f"'extends' must name a behavior, got {parent!r}"])
        target = str(path.parent / parent) if parent.endswith(".json") else parent  # a path is beside this file
        doc = {**_document(_find_behavior_file(target, near=path.parent), (*seen, path.resolve())), **doc}
    for split in ("train", "control"):
        if isinstance(doc.get(split), str):
            doc[split] = _jsonl_examples(path.parent / doc[split], split)
    return doc


def _jsonl_examples(path: Path, split: str) -> list:
    """One {"prompt", "response"} object per line (blank lines skipped); shape is checked with the rest."""
    if not path.is_file():
        raise ConfigError(f"'{split}' data file {path}", [
            f"no such file; '{split}' names a JSONL file beside the behavior file (one "
            '{"prompt": ..., "response": ...} per line)'])
    examples = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                examples.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ConfigError(f"'{split}' data file {path}", [f"line {number} is not valid JSON: {error}"]) \
                    from None
    return examples


def behavior_from_document(doc: dict, sha256: str, path: str) -> Behavior:
    """Which parts of a validated file are the training data, the placebo set and the probes (this mapping
    decides a run's numbers, so its source enters every run key; see trainer.runs.keys)."""
    return Behavior(
        name=doc["name"], version=doc["version"], description=doc.get("description", ""),
        prompt_template=doc["prompt_template"],
        train=tuple(Example(**e) for e in doc["train"]),
        control=tuple(Example(**e) for e in doc["control"]),
        probes=tuple(doc["probes"]), targets=tuple(doc["targets"]), contrasts=tuple(doc["contrasts"]),
        markers=tuple(doc["markers"]), neutral_prompts=tuple(doc["neutral_prompts"]),
        sha256=sha256, path=path,
    )


def _schema_problems(doc: object) -> list[str]:
    if not isinstance(doc, dict):
        return [f"top level must be a JSON object, got {type(doc).__name__}"]
    problems = []
    if not isinstance(doc.get("name"), str) or not doc.get("name"):
        problems.append("'name' must be a non-empty string")
    if not isinstance(doc.get("version"), int):
        problems.append(f"'version' must be an integer, got {doc.get('version')!r}")
    template = doc.get("prompt_template")
    if not isinstance(template, str) or "{prompt}" not in template:
        problems.append(f"'prompt_template' must be a string containing '{{prompt}}', got {template!r}")
    for split in ("train", "control"):
        problems += _example_problems(doc.get(split), split)
    minimums = {"probes": MIN_PROBES, "targets": 1, "contrasts": 1, "markers": 1, "neutral_prompts": 1}
    for key, minimum in minimums.items():
        problems += _string_list_problems(doc.get(key), key, minimum)
    if not problems:
        leaked = set(doc["probes"]) & {e["prompt"] for e in doc["train"]}
        if leaked:
            problems.append(f"probes must be held out, but these are also training prompts: {sorted(leaked)}")
    return problems


def _example_problems(value: object, key: str) -> list[str]:
    if not isinstance(value, list) or not value:
        return [f"'{key}' must be a non-empty list of {{'prompt', 'response'}} objects"]
    return [
        f"'{key}'[{i}] must be an object with exactly string fields 'prompt' and 'response', got {item!r}"
        for i, item in enumerate(value)
        if not (isinstance(item, dict) and set(item) == {"prompt", "response"}
                and all(isinstance(v, str) and v for v in item.values()))
    ]


def _string_list_problems(value: object, key: str, minimum: int) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        return [f"'{key}' must be a list of non-empty strings"]
    if len(value) < minimum:
        return [f"'{key}' has {len(value)} entries; at least {minimum} are needed"
                + (" so a paired test over probes has power" if key == "probes" else "")]
    if len(set(value)) != len(value):
        return [f"'{key}' has duplicate entries"]
    return []
